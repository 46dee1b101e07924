"""Reviews through the API, the dashboard (review panel, review document, Reports page) and
the CLI, against the real app and a real SQLite store."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from nachtwacht.cli.main import app as cli
from nachtwacht.clock import FakeClock
from nachtwacht.incidents import service as incidents
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.auth_helpers import add_user, fast_hashing, login  # noqa: F401 - fixture
from tests.conftest import closed_port
from tests.helpers import admin_token, settings_for

pytestmark = pytest.mark.usefixtures("fast_hashing")
SITE = """
site: reviews-web
people:
  contacts:
    - {id: olga, name: Olga Oncall, roles: [oncall_engineer], email: olga@example.org}
    - {id: tina, name: Tina Techlead, roles: [technical_lead], email: tina@example.org}
probes:
  - {name: db, kind: tcp, host: 127.0.0.1, port: 1, component: database}
"""
HTML = {"Accept": "text/html"}


@pytest.fixture
def client(sqlite_store: Store, clock: FakeClock) -> Iterator[TestClient]:
    settings = settings_for(SITE, sqlite_store.url)
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    token = admin_token(sqlite_store, clock.now())
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def _declare(client: TestClient, severity: int = 1) -> int:
    made = client.post("/api/v1/incidents", json={"title": "db down", "severity": severity})
    assert made.status_code == 201, made.text
    return made.json()["id"]


def test_api_fills_in_the_review_and_serves_the_document(client: TestClient) -> None:
    inc = _declare(client)
    put = client.put(
        f"/api/v1/incidents/{inc}/postmortem",
        json={"root_cause": "disk full", "impact": "checkout down"},
    )
    assert put.status_code == 200, put.text
    assert put.json()["root_cause"] == "disk full" and put.json()["lessons"] is None
    empty = client.put(f"/api/v1/incidents/{inc}/postmortem", json={})
    assert empty.status_code == 422 and empty.json()["field"] == "root_cause"
    missing = client.put("/api/v1/incidents/999/postmortem", json={"lessons": "x"})
    assert missing.status_code == 404

    review = client.get(f"/api/v1/incidents/{inc}/postmortem").json()
    assert review["fields"]["impact"] == "checkout down"
    assert review["incident"]["severity"] == 1 and review["times"]["detected_at"].endswith("Z")
    assert review["figures"]["time_to_detect"] == 0
    md = client.get(f"/api/v1/incidents/{inc}/review", params={"format": "md"})
    assert md.headers["content-type"].startswith("text/markdown")
    assert "### Root cause\n\ndisk full" in md.text
    html = client.get(f"/api/v1/incidents/{inc}/review", params={"format": "html"})
    assert '<div class="field" data-field="root_cause">disk full</div>' in html.text
    assert client.get(f"/api/v1/incidents/{inc}/review?format=pdf").status_code == 422


def test_api_followups_add_list_and_done(client: TestClient) -> None:
    inc = _declare(client)
    bad = client.post(
        "/api/v1/followups",
        json={"incident_id": inc, "title": "disk alert", "owner": "bob", "due": "7d"},
    )
    assert bad.status_code == 422 and bad.json()["field"] == "owner"
    when = client.post(
        "/api/v1/followups",
        json={"incident_id": inc, "title": "disk alert", "owner": "olga", "due": "someday"},
    )
    assert when.status_code == 422 and when.json()["field"] == "due"
    made = client.post(
        "/api/v1/followups",
        json={"incident_id": inc, "title": "disk alert", "owner": "olga", "due": "2027-01-31"},
    )
    assert made.status_code == 201, made.text
    action = made.json()
    assert action["due_at"] == "2027-01-31T08:00:00Z"  # 09:00 in Amsterdam: business hours open
    listed = client.get("/api/v1/followups", params={"owner": "olga"})
    assert [f["id"] for f in listed.json()] == [action["id"]]
    assert listed.headers["x-total-count"] == "1"
    done = client.post(f"/api/v1/followups/{action['id']}/done")
    assert done.status_code == 200 and done.json()["status"] == "done"
    assert client.post(f"/api/v1/followups/{action['id']}/done").status_code == 409
    assert client.get("/api/v1/followups").json() == []
    assert len(client.get("/api/v1/followups", params={"status": "all"}).json()) == 1


def test_api_monthly_report(client: TestClient) -> None:
    inc = _declare(client, severity=2)
    client.post(f"/api/v1/incidents/{inc}/ack")
    report = client.get("/api/v1/reports/monthly", params={"month": "2027-01"})
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["month"] == "2027-01" and body["incidents"]["count"] == 1
    assert body["incidents"]["mtta"] == 0 and body["by_severity"]["2"]["count"] == 1
    assert [m["month"] for m in body["history"]][-2:] == ["2026-12", "2027-01"]
    bad = client.get("/api/v1/reports/monthly", params={"month": "January"})
    assert bad.status_code == 422 and bad.json()["field"] == "month"


# -- the dashboard -------------------------------------------------------------------------------


@pytest.fixture
def browser(sqlite_store: Store, clock: FakeClock) -> Iterator[tuple[TestClient, str]]:
    """A logged-in responder's session (cookie and CSRF token)."""
    # nothing listens at the dashboard's configured address
    settings = settings_for(f"server: {{port: {closed_port()}}}\n" + SITE, sqlite_store.url)
    add_user(sqlite_store, clock, "rita", "responder")
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    with TestClient(app) as c:
        yield c, login(c, "rita")


def test_review_panel_shows_the_gate_and_saves_the_review(
    browser: tuple[TestClient, str], sqlite_store: Store, clock: FakeClock
) -> None:
    client, csrf = browser
    inc = client.post(
        "/api/v1/incidents",
        json={"title": "db down", "severity": 1},
        headers={"X-CSRF-Token": csrf},
    ).json()["id"]
    page = client.get(f"/incidents/{inc}", headers=HTML).text
    assert f'hx-get="/ui/incidents/{inc}/review"' in page
    panel = client.get(f"/ui/incidents/{inc}/review").text
    assert 'id="review-panel"' in panel and 'data-ready="no"' in panel
    assert f'href="/incidents/{inc}/review"' in panel and 'id="postmortem-form"' in panel

    saved = client.post(
        f"/incidents/{inc}/postmortem",
        data={"csrf_token": csrf, "root_cause": "disk full", "impact": "", "lessons": "alert"},
        follow_redirects=False,
    )
    assert saved.status_code == 303
    assert saved.headers["location"] == f"/incidents/{inc}#review-panel"
    added = client.post(
        f"/incidents/{inc}/followups",
        data={"csrf_token": csrf, "title": "add a disk alert", "owner": "tina", "due": "3d"},
        follow_redirects=False,
    )
    assert added.status_code == 303
    panel = client.get(f"/ui/incidents/{inc}/review").text
    assert ">disk full</textarea>" in panel and "add a disk alert" in panel
    action = re.search(r'data-followup="(\d+)"', panel)
    assert action is not None
    done = client.post(
        f"/incidents/{inc}/followups/{action.group(1)}/done",
        data={"csrf_token": csrf},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert 'data-status="done"' in client.get(f"/ui/incidents/{inc}/review").text

    # a refusal keeps what was typed, with the service's words
    refused = client.post(
        f"/incidents/{inc}/followups",
        data={"csrf_token": csrf, "title": "rebuild the replica", "owner": "tina", "due": "soon"},
    )
    assert refused.status_code == 422
    assert "is not a due date" in refused.text and 'value="rebuild the replica"' in refused.text
    no_csrf = client.post(f"/incidents/{inc}/postmortem", data={"root_cause": "x"})
    assert no_csrf.status_code == 403

    document = client.get(f"/incidents/{inc}/review", headers=HTML)
    assert document.status_code == 200 and "<h1>Post-incident review: #" in document.text
    markdown = client.get(f"/incidents/{inc}/review.md")
    assert "### Lessons learned\n\nalert" in markdown.text
    assert client.get("/incidents/999/review").status_code == 404


def test_the_run_checklist_button_records_a_run_on_the_incident(
    browser: tuple[TestClient, str], sqlite_store: Store
) -> None:
    client, csrf = browser
    inc = client.post(
        "/api/v1/incidents",
        json={"title": "db down", "severity": 2},
        headers={"X-CSRF-Token": csrf},
    ).json()["id"]
    ran = client.post(
        f"/incidents/{inc}/checklist", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert ran.status_code == 303
    panel = client.get(f"/ui/incidents/{inc}/review").text
    # no server listens at the configured address and no channel is configured: it fails,
    # and says why, item by item
    assert 'data-passed="no"' in panel and 'data-item="dashboard" data-ok="no"' in panel
    assert 'data-item="integrity" data-ok="yes"' in panel
    with sqlite_store.connect() as conn:
        kinds = [e["kind"] for e in incidents.timeline(conn, inc)]
    assert "checklist" in kinds


def test_reports_page_draws_the_monthly_figures(
    browser: tuple[TestClient, str], clock: FakeClock
) -> None:
    client, csrf = browser
    inc = client.post(
        "/api/v1/incidents",
        json={"title": "db down", "severity": 1},
        headers={"X-CSRF-Token": csrf},
    ).json()["id"]
    clock.advance(300)
    client.post(f"/api/v1/incidents/{inc}/ack", headers={"X-CSRF-Token": csrf})
    page = client.get("/reports", params={"month": "2027-01"}, headers=HTML)
    assert page.status_code == 200
    html = page.text
    assert '<dd data-figure="count">1</dd>' in html
    assert '<dd data-figure="mtta">5 min</dd>' in html
    assert '<dd data-figure="sla">100 %</dd>' in html
    assert html.count('<svg class="chart"') == 6
    assert '<g data-label="S1" data-value="1">' in html
    assert 'href="/reports?month=2026-12"' in html
    bad = client.get("/reports", params={"month": "2027-13"}, headers=HTML)
    assert bad.status_code == 422 and "is not a month" in bad.text


# -- the CLI -------------------------------------------------------------------------------------


def test_cli_postmortem_followup_and_monthly(tmp_path: Path) -> None:
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(f"store:\n  url: sqlite:///{tmp_path / 'nw.db'}\n" + SITE)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(cli, [*args, "-c", str(config)])
        assert result.exit_code == code, result.output
        return result.output

    run("incident", "declare", "--title", "db down", "-s", "2")
    out = run("postmortem", "set", "1", "--root-cause", "disk full", "--lessons", "alert earlier")
    assert "root cause            disk full" in out
    assert "error: nothing to set" in run("postmortem", "set", "1", code=2)
    made = json.loads(
        run(
            "followup",
            "add",
            "1",
            "--title",
            "disk alert",
            "--owner",
            "olga",
            "--due",
            "7d",
            "--json",
        )
    )
    assert made["owner"] == "olga" and made["status"] == "open"
    assert "error: no contact 'bob'" in run(
        "followup", "add", "1", "-t", "x y z", "--owner", "bob", "--due", "7d", code=2
    )
    assert "disk alert" in run("followup", "list")
    run("followup", "done", str(made["id"]))
    assert run("followup", "list") == "no follow-ups\n"
    assert "is already done" in run("followup", "done", str(made["id"]), code=1)
    monthly = json.loads(run("report", "monthly", "--json"))
    assert monthly["incidents"]["count"] == 1 and monthly["open_followups"] == []
    assert "incidents 1: S1 0, S2 1, S3 0" in run("report", "monthly")
    assert "error: 'May' is not a month" in run("report", "monthly", "--month", "May", code=2)
    md = run("report", "postmortem", "1")
    assert "### Root cause\n\ndisk full" in md and "disk alert" in md
    assert "--format must be" in run("report", "postmortem", "1", "--format", "pdf", code=2)
    assert "no incident 9" in run("report", "postmortem", "9", code=2)
