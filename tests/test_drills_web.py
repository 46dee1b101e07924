"""The drills' doors: the API (viewer reads, responder starts and ends), the Drills page, a
drill's report page, and the overview's line. Real app, real SQLite store, no engine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from nachtwacht.clock import FakeClock
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.auth_helpers import add_user, fast_hashing, login  # noqa: F401 - fixture
from tests.conftest import closed_port
from tests.helpers import admin_token, settings_for

HTML = {"Accept": "text/html"}


@pytest.fixture
def client(
    sqlite_store: Store,
    clock: FakeClock,
    fast_hashing: None,  # noqa: F811
) -> Iterator[TestClient]:
    settings = settings_for(
        f"""
site: drills-web
people:
  contacts:
    - {{id: olga, name: Olga Oncall, roles: [oncall_engineer], email: olga@example.org}}
    - {{id: mark, name: Mark Manager, roles: [operations_manager], email: mark@example.org}}
notify:
  channels:
    mail: {{kind: email, host: 127.0.0.1, port: {closed_port()}}}
probes: []
""",
        sqlite_store.url,
    )
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    add_user(sqlite_store, clock, "vic", "viewer")
    with TestClient(app) as c:
        yield c


def _auth(store: Store, clock: FakeClock, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token(store, clock.now(), role=role)}"}


def test_the_api_starts_lists_ends_and_reports_a_drill(
    client: TestClient, sqlite_store: Store, clock: FakeClock
) -> None:
    viewer = _auth(sqlite_store, clock, "viewer")
    responder = _auth(sqlite_store, clock, "responder")
    listed = client.get("/api/v1/drills", headers=viewer)
    assert listed.status_code == 200
    body = listed.json()
    assert body["drills"] == []
    assert {s["name"] for s in body["scenarios"]} == {
        "service-outage",
        "analytics-failure",
        "performance-failure",
        "security-incident",
        "database-down",
    }
    assert [s["name"] for s in body["schedule"]] == ["monthly", "quarterly"]

    refused = client.post("/api/v1/drills", json={"scenario": "service-outage"}, headers=viewer)
    assert refused.status_code == 403
    unknown = client.post("/api/v1/drills", json={"scenario": "nope"}, headers=responder)
    assert unknown.status_code == 404 and "no scenario 'nope'" in unknown.text
    assert client.get("/api/v1/drills", headers=viewer).json()["drills"] == []  # nothing changed

    started = client.post(
        "/api/v1/drills", json={"scenario": "service-outage", "severity": 2}, headers=responder
    )
    assert started.status_code == 201, started.text
    drill = started.json()
    assert (drill["status"], drill["severity"]) == ("running", 2)
    with sqlite_store.connect() as conn:  # its runbook, on its incident, as a dry run
        run = conn.execute(
            select(t.runbook_runs).where(t.runbook_runs.c.id == drill["runbook_run"])
        )
        row = run.mappings().one()
    assert (row["runbook"], row["incident_id"], row["dry_run"], row["status"]) == (
        "monitoring-failure",
        drill["incident_id"],
        True,
        "planned",
    )
    incident = client.get(f"/api/v1/incidents/{drill['incident_id']}", headers=viewer).json()
    assert incident["title"].startswith("monitoring: DRILL dashboard CRITICAL")

    clock.advance(120)
    ended = client.post(f"/api/v1/drills/{drill['id']}/end", headers=responder).json()
    assert ended["status"] == "ended" and ended["result"] == "missed"
    md = client.get(f"/api/v1/drills/{drill['id']}/report", headers=viewer)
    assert md.status_code == 200 and md.headers["content-type"].startswith("text/markdown")
    assert "| Time to page | never | 5 min | MISSED |" in md.text
    html = client.get(f"/api/v1/drills/{drill['id']}/report?format=html", headers=viewer)
    assert html.status_code == 200 and "<h1>DRILL #1: " in html.text
    assert client.get("/api/v1/drills/99", headers=viewer).status_code == 404


def test_the_drills_page_and_the_overview_show_running_drills(
    client: TestClient, sqlite_store: Store, clock: FakeClock
) -> None:
    responder = _auth(sqlite_store, clock, "responder")
    drill = client.post(
        "/api/v1/drills", json={"scenario": "database-down"}, headers=responder
    ).json()
    login(client, "vic")
    page = client.get("/drills", headers=HTML)
    assert page.status_code == 200
    assert f'data-drill="{drill["id"]}"' in page.text
    assert 'data-scenario="database-down"' in page.text
    assert 'data-schedule="monthly" data-state="done"' in page.text  # an ad-hoc drill counts
    assert 'data-schedule="quarterly" data-state="due"' in page.text
    overview = client.get("/", headers=HTML).text
    assert "data-drills-running" in overview and "database-down" in overview
    report = client.get(f"/drills/{drill['id']}", headers=HTML)
    assert report.status_code == 200 and "still running" in report.text
    assert client.get("/drills/99", headers=HTML).status_code == 404
    incident = client.get(f"/incidents/{drill['incident_id']}", headers=HTML).text
    assert f'id="drill-tag" href="/drills/{drill["id"]}"' in incident
    assert f'href="/drills/{drill["id"]}">drill #' in client.get("/incidents", headers=HTML).text


def test_an_overdue_drill_is_a_badge_on_the_overview(
    client: TestClient, sqlite_store: Store, clock: FakeClock
) -> None:
    # the clock is in January 2027: December was reminded and passed without a drill
    with sqlite_store.begin() as conn:
        conn.execute(
            t.drill_reminders.insert().values(
                schedule="monthly",
                period="2026-12",
                due_at=clock.now() - 86400,
                created_at=clock.now() - 40 * 86400,
                status="sent",
            )
        )
    login(client, "vic")
    overview = client.get("/", headers=HTML).text
    assert 'data-drill-overdue="monthly"' in overview and "monthly drill OVERDUE" in overview
    assert 'data-drill-overdue="quarterly"' not in overview  # never reminded: not overdue yet
    page = client.get("/drills", headers=HTML).text
    assert 'data-schedule="monthly" data-state="overdue"' in page


def test_a_responder_starts_a_drill_from_the_page(
    client: TestClient, sqlite_store: Store, clock: FakeClock
) -> None:
    add_user(sqlite_store, clock, "rita", "responder")
    csrf = login(client, "rita")
    page = client.get("/drills", headers=HTML).text
    assert 'action="/drills"' in page and 'name="confirm"' in page  # database-down's
    form = {"scenario": "database-down", "schedule": "quarterly", "confirm": "yes"}
    assert client.post("/drills", data=form).status_code == 403  # no CSRF token
    refused = client.post("/drills", data={"scenario": "nope", "csrf_token": csrf})
    assert refused.status_code == 404 and "no scenario" in refused.text
    started = client.post("/drills", data=form | {"csrf_token": csrf}, follow_redirects=False)
    assert started.status_code == 303 and started.headers["location"] == "/drills/1"
    viewer = _auth(sqlite_store, clock, "viewer")
    drill = client.get("/api/v1/drills/1", headers=viewer).json()
    assert (drill["kind"], drill["scenario"]) == ("quarterly", "database-down")
    assert [s["id"] for s in drill["steps"] if s["mode"] == "real"] == [
        "db-status",
        "connectivity-mysql",
        "connectivity-postgresql",
    ]
    client.cookies.clear()
    login(client, "vic")
    assert 'action="/drills"' not in client.get("/drills", headers=HTML).text


def test_a_responder_ends_a_drill_from_its_page(
    client: TestClient, sqlite_store: Store, clock: FakeClock
) -> None:
    add_user(sqlite_store, clock, "rita", "responder")
    csrf = login(client, "rita")
    form = {"scenario": "service-outage", "csrf_token": csrf}
    assert client.post("/drills", data=form, follow_redirects=False).status_code == 303
    page = client.get("/drills/1", headers=HTML).text
    assert 'action="/drills/1/end"' in page
    assert client.post("/drills/1/end", data={}).status_code == 403  # no CSRF token
    clock.advance(600)
    ended = client.post("/drills/1/end", data={"csrf_token": csrf}, follow_redirects=False)
    assert ended.status_code == 303 and ended.headers["location"] == "/drills/1"
    viewer = _auth(sqlite_store, clock, "viewer")
    drill = client.get("/api/v1/drills/1", headers=viewer).json()
    drill_ended = drill["ended_at"]
    assert drill["status"] == "ended" and drill_ended is not None
    clock.advance(60)
    page = client.get("/drills/1", headers=HTML).text
    assert 'action="/drills/1/end"' not in page
    # ending an ended drill changes nothing (a second click, another tab)
    again = client.post("/drills/1/end", data={"csrf_token": csrf}, follow_redirects=False)
    assert again.status_code == 303
    assert client.get("/api/v1/drills/1", headers=viewer).json()["ended_at"] == drill_ended


def test_a_drill_whose_runbook_cannot_be_attached_still_answers_that_it_started(
    client: TestClient, sqlite_store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault: the store is locked when the runbook is attached, after the drill (and its pages)
    committed. An error answer would have the caller start it again: a second page."""
    from nachtwacht.runbooks.runner import Runner
    from nachtwacht.store.db import StoreError

    async def locked(*_args: object, **_kwargs: object) -> int:
        raise StoreError("store sqlite: database is locked")

    monkeypatch.setattr(Runner, "start", locked)
    responder = _auth(sqlite_store, clock, "responder")
    started = client.post(
        "/api/v1/drills", json={"scenario": "service-outage", "severity": 2}, headers=responder
    )
    assert started.status_code == 201, started.text
    assert started.json()["runbook_run"] is None
    with sqlite_store.connect() as conn:
        assert len(conn.execute(select(t.drills)).all()) == 1
