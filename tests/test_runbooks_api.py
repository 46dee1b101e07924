"""Runbooks over HTTP: /api/v1/runbooks, /api/v1/runbook-runs and the incident page's panel.

The real app (create_app) on a real store, the sandbox's stand-ins for the commands.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nachtwacht.clock import FakeClock
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.auth_helpers import add_user, fast_hashing, login  # noqa: F401 - fixture
from tests.helpers import admin_token
from tests.test_runbooks_sandbox import (
    DB_PASSWORD,
    Sandbox,
    declare,
    sandbox_fixture,  # noqa: F401 - the `sandbox` fixture
)

HTML = {"Accept": "text/html"}


@pytest.fixture
def api(store: Store, clock: FakeClock, sandbox: Sandbox) -> Iterator[TestClient]:
    settings = sandbox.settings(store)
    app = create_app(settings, store, clock, start_engine=False)
    token = admin_token(store, clock.now(), role="responder")
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


def test_list_and_show_runbooks(api: TestClient) -> None:
    listed = api.get("/api/v1/runbooks")
    assert listed.status_code == 200
    names = {r["name"]: r for r in listed.json()}
    assert names["database-emergency"]["destructive_steps"] == 5
    shown = api.get("/api/v1/runbooks/database-emergency").json()
    assert shown["steps"][1]["does"].startswith("$ mysqladmin --host=127.0.0.1")
    assert DB_PASSWORD not in str(shown) and shown["variables"]["db_password"] == "••••••"
    missing = api.get("/api/v1/runbooks/nope")
    assert missing.status_code == 404 and missing.json()["field"] == "name"


def test_a_run_through_the_api_refuses_unconfirmed_destructive_steps_then_runs_them(
    api: TestClient, store: Store, clock: FakeClock, sandbox: Sandbox
) -> None:
    settings = api.app.state.nw.runtime.settings
    incident_id = declare(store, settings, clock)
    refused = api.post(
        "/api/v1/runbooks/monitoring-failure/runs", json={"incident_id": incident_id}
    )
    assert refused.status_code == 201, refused.text
    body = refused.json()
    assert body["status"] == "refused" and body["steps"][-1]["status"] == "refused"
    assert not [c for c in sandbox.calls() if "restart" in c]

    confirmed = api.post(
        "/api/v1/runbooks/monitoring-failure/runs",
        json={"incident_id": incident_id, "confirm": True},
    ).json()
    # it ran to the manual step at its end, which waits for a person
    assert confirmed["status"] == "waiting", confirmed["summary"]
    assert confirmed["steps"][-1]["id"] == "escalation-review"
    restart = next(s for s in confirmed["steps"] if s["id"] == "restart-web")
    assert restart["confirmed_by"] == "token:test-responder" and restart["status"] == "ok"
    assert "systemctl restart nginx" in sandbox.calls()

    again = api.get(f"/api/v1/runbook-runs/{confirmed['id']}").json()
    assert again == confirmed
    runs = api.get("/api/v1/runbook-runs", params={"incident_id": incident_id})
    assert [r["id"] for r in runs.json()] == [confirmed["id"], body["id"]]
    assert runs.headers["X-Total-Count"] == "2"


def test_a_manual_step_pauses_and_the_api_resumes_it(api: TestClient) -> None:
    started = api.post("/api/v1/runbooks/security-incident/runs", json={}).json()
    assert started["status"] == "waiting" and started["next_step"] == 2
    resumed = api.post(
        f"/api/v1/runbook-runs/{started['id']}/resume", json={"action": "run", "confirm": True}
    ).json()
    step = resumed["steps"][1]
    assert (step["id"], step["status"], step["confirmed_by"]) == (
        "change-passwords",
        "ok",
        "token:test-responder",
    )
    restrict = next(s for s in resumed["steps"] if s["id"] == "restrict-access")
    assert restrict["status"] == "ok" and restrict["confirmed_by"] == "token:test-responder"
    assert resumed["status"] == "waiting" and resumed["next_step"] == 9  # the report at the end
    again = api.post(f"/api/v1/runbook-runs/{started['id']}/resume", json={"action": "skip"})
    assert again.json()["status"] == "succeeded"
    finished = api.post(f"/api/v1/runbook-runs/{started['id']}/resume", json={})
    assert finished.status_code == 409 and finished.json()["field"] == "run_id"


def test_bad_input_is_a_json_error_naming_the_field(api: TestClient) -> None:
    cases = [
        ({"incident_id": 999}, 404, "incident_id"),
        ({"vars": {"suspicious_ip": "1.2.3.4 && reboot"}}, 422, "vars.suspicious_ip"),
        ({"vars": {"other": "x"}}, 422, "vars"),
        ({"incident_id": 0}, 422, "incident_id"),
    ]
    for body, status, field in cases:
        response = api.post("/api/v1/runbooks/security-incident/runs", json=body)
        assert (response.status_code, response.json()["field"]) == (status, field), body
    assert api.get("/api/v1/runbook-runs/12345").status_code == 404


def test_dry_run_through_the_api_masks_secrets(api: TestClient, sandbox: Sandbox) -> None:
    body = api.post("/api/v1/runbooks/database-emergency/runs", json={"dry_run": True}).json()
    assert body["status"] == "planned" and body["dry_run"] is True
    text = "\n".join(s["output"] for s in body["steps"])
    assert "MYSQL_PWD=••••••" in text and DB_PASSWORD not in text
    assert sandbox.calls() == []


def test_a_viewer_may_read_but_not_run(
    sqlite_store: Store, clock: FakeClock, sandbox: Sandbox
) -> None:
    app = create_app(sandbox.settings(sqlite_store), sqlite_store, clock, start_engine=False)
    token = admin_token(sqlite_store, clock.now(), role="viewer")
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as viewer:
        assert viewer.get("/api/v1/runbooks").status_code == 200
        refused = viewer.post("/api/v1/runbooks/monitoring-failure/runs", json={"confirm": True})
        assert refused.status_code == 403


# -- the incident page's panel ------------------------------------------------------------------


@pytest.fixture
def page(
    sqlite_store: Store,
    clock: FakeClock,
    sandbox: Sandbox,
    fast_hashing: None,  # noqa: F811
) -> Iterator[tuple[TestClient, int]]:
    settings = sandbox.settings(sqlite_store)
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    add_user(sqlite_store, clock, "rita", "responder")
    add_user(sqlite_store, clock, "vic", "viewer")
    incident_id = declare(sqlite_store, settings, clock)
    with TestClient(app) as client:
        yield client, incident_id


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def test_the_incident_page_loads_the_panel_and_a_responder_runs_step_by_step(
    page: tuple[TestClient, int], sandbox: Sandbox
) -> None:
    client, incident_id = page
    login(client, "rita")
    incident = client.get(f"/incidents/{incident_id}", headers=HTML).text
    assert f'hx-get="/ui/incidents/{incident_id}/runbooks"' in incident
    panel = client.get(f"/ui/incidents/{incident_id}/runbooks").text
    assert panel.lstrip().startswith('<section id="runbooks-panel"')
    assert '<option value="monitoring-failure">' in panel
    assert "No runbook has run for this incident yet." in panel
    token = _csrf(panel)

    started = client.post(
        f"/incidents/{incident_id}/runbooks",
        data={"csrf_token": token, "runbook": "monitoring-failure", "mode": "step"},
        follow_redirects=False,
    )
    assert started.status_code == 303
    assert started.headers["location"] == f"/incidents/{incident_id}#runbooks-panel"
    panel = client.get(f"/ui/incidents/{incident_id}/runbooks").text
    assert 'data-status="waiting"' in panel and 'data-step-form="web-status"' in panel
    assert ">Run step</button>" in panel
    assert sandbox.calls() == []  # nothing runs before the responder says so
    run_id = re.search(r'data-run="(\d+)"', panel).group(1)

    def press(action: str) -> str:
        response = client.post(
            f"/incidents/{incident_id}/runbook-runs/{run_id}",
            data={"csrf_token": token, "action": action},
            follow_redirects=False,
        )
        assert response.status_code == 303, response.text
        return client.get(f"/ui/incidents/{incident_id}/runbooks").text

    panel = press("run")
    assert 'data-step="web-status" data-step-status="ok"' in panel
    assert sandbox.calls() == ["systemctl status nginx --no-pager --lines=20"]
    for _ in range(5):  # db-status, disk, memory, recent-errors, preserve-evidence
        panel = press("run")
    assert 'data-step-form="restart-web"' in panel
    assert ">Confirm and run</button>" in panel  # a destructive step says so
    panel = press("refuse")
    assert 'data-step="restart-web" data-step-status="refused"' in panel
    assert 'data-status="refused"' in panel and "step-form" not in panel
    assert not [c for c in sandbox.calls() if "restart" in c]
    timeline = client.get(f"/ui/incidents/{incident_id}/timeline").text
    assert "restart-web (command, destructive): refused" in timeline


def test_the_panel_for_a_viewer_has_no_buttons_and_forms_need_the_csrf_token(
    page: tuple[TestClient, int],
) -> None:
    client, incident_id = page
    login(client, "vic")
    panel = client.get(f"/ui/incidents/{incident_id}/runbooks").text
    assert 'id="runbooks-panel"' in panel and "runbook-start" not in panel
    refused = client.post(
        f"/incidents/{incident_id}/runbooks",
        data={"csrf_token": _csrf(client.get("/runbooks", headers=HTML).text), "runbook": "x"},
    )
    assert refused.status_code == 403
    client.cookies.clear()
    login(client, "rita")
    no_token = client.post(
        f"/incidents/{incident_id}/runbooks", data={"runbook": "monitoring-failure"}
    )
    assert no_token.status_code == 403


def test_starting_an_unknown_runbook_shows_the_incident_page_with_the_reason(
    page: tuple[TestClient, int],
) -> None:
    client, incident_id = page
    login(client, "rita")
    token = _csrf(client.get(f"/ui/incidents/{incident_id}/runbooks").text)
    response = client.post(
        f"/incidents/{incident_id}/runbooks",
        data={"csrf_token": token, "runbook": "nope", "mode": "step"},
        headers=HTML,
    )
    assert response.status_code == 404
    assert "no runbook named &#39;nope&#39;" in response.text


def test_the_runbooks_page_lists_every_runbook_with_its_commands(
    page: tuple[TestClient, int], tmp_path: Path
) -> None:
    client, _ = page
    login(client, "vic")
    html = client.get("/runbooks", headers=HTML).text
    for name in ("immediate-response", "database-emergency", "security-incident"):
        assert f'data-runbook="{name}"' in html
    assert "$ sudo -n systemctl restart nginx" in html
    assert DB_PASSWORD not in html


def test_the_picker_lists_the_immediate_response_first_and_chooses_it(
    page: tuple[TestClient, int],
) -> None:
    client, incident_id = page
    login(client, "rita")
    panel = client.get(f"/ui/incidents/{incident_id}/runbooks").text
    options = re.findall(r'<option value="([^"]+)"( selected)?>', panel)
    assert options[0] == ("immediate-response", " selected")
    assert [name for name, chosen in options if chosen] == ["immediate-response"]
    assert len(options) > 1
