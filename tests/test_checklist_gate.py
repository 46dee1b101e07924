"""Resolving an S1/S2 incident needs a passing restoration checklist or a written reason.

The rule (checklist/gate.py) on every store backend, then through each door: the CLI
(`incident resolve --skip-checklist`), the API (`skip_checklist`) and the dashboard form.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from nachtwacht.checklist import service as checklist
from nachtwacht.checklist.gate import resolution_gate
from nachtwacht.checklist.items import ITEMS, ItemResult
from nachtwacht.cli.main import app as cli
from nachtwacht.clock import FakeClock
from nachtwacht.config.schema import Settings
from nachtwacht.incidents import escalation
from nachtwacht.incidents import service as incidents
from nachtwacht.incidents.service import IncidentError
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.helpers import admin_token, settings_for

runner = CliRunner()
SITE = "site: gate-test\nprobes: []\n"


def _run(store: Store, incident_id: int, at: float, failing: tuple[str, ...] = ()) -> int:
    results = [ItemResult(name, name not in failing, "checked") for name in ITEMS]
    with store.begin() as conn:
        return checklist.record(conn, incident_id, results, "olga", at)["id"]


def _declare(store: Store, settings: Settings, at: float, severity: int = 1) -> int:
    with store.begin() as conn:
        return incidents.open_incident(
            conn, settings, title="checkout down", severity=severity, now=at, origin="declared"
        )


def _resolve(store: Store, settings: Settings, incident_id: int, at: float, **kw: object) -> None:
    with store.begin() as conn:
        escalation.resolve(
            conn, settings, incident_id, "olga", at, "fixed", gate=resolution_gate, **kw
        )


def _status(store: Store, incident_id: int) -> str:
    with store.connect() as conn:
        return incidents.require(conn, incident_id)["status"]


def _kinds(store: Store, incident_id: int) -> list[tuple[str, str]]:
    with store.connect() as conn:
        return [(e["kind"], e["message"]) for e in incidents.timeline(conn, incident_id)]


def test_s1_without_a_checklist_is_refused_with_a_409_naming_the_way_out(
    store: Store, clock: FakeClock
) -> None:
    settings = settings_for(SITE, store.url)
    inc = _declare(store, settings, clock.now())
    with pytest.raises(IncidentError) as refused:
        _resolve(store, settings, inc, clock.now() + 60)
    assert refused.value.http_status == 409 and refused.value.field == "skip_checklist"
    assert "no restoration checklist has passed" in str(refused.value)
    assert f"nachtwacht verify --incident {inc}" in str(refused.value)
    assert _status(store, inc) == "investigating"


def test_a_written_reason_to_skip_is_recorded_on_the_timeline(
    store: Store, clock: FakeClock
) -> None:
    settings = settings_for(SITE, store.url)
    inc = _declare(store, settings, clock.now(), severity=2)
    with pytest.raises(IncidentError) as short:
        _resolve(store, settings, inc, clock.now() + 60, skip_checklist=" x ")
    assert short.value.http_status == 422
    _resolve(store, settings, inc, clock.now() + 60, skip_checklist="dashboard host replaced")
    assert _status(store, inc) == "resolved"
    assert ("checklist_skipped", "restoration checklist skipped: dashboard host replaced") in (
        _kinds(store, inc)
    )


def test_a_passing_run_since_acknowledgement_allows_it_and_a_later_failure_does_not(
    store: Store, clock: FakeClock
) -> None:
    settings = settings_for(SITE, store.url)
    t0 = clock.now()
    inc = _declare(store, settings, t0)
    early = _run(store, inc, t0 + 60)  # passed, but before anyone responded
    with store.begin() as conn:
        incidents.acknowledge(conn, inc, "olga", t0 + 120)
    with pytest.raises(IncidentError):
        _resolve(store, settings, inc, t0 + 180)
    _run(store, inc, t0 + 600)
    _run(store, inc, t0 + 700, failing=("dashboard", "api"))
    with pytest.raises(IncidentError) as refused:
        _resolve(store, settings, inc, t0 + 800)
    assert "failed (dashboard, api)" in str(refused.value)
    passing = _run(store, inc, t0 + 900)
    _resolve(store, settings, inc, t0 + 1000)
    assert _status(store, inc) == "resolved"
    assert (
        "checklist",
        f"resolution backed by restoration checklist run #{passing} (passed)",
    ) in _kinds(store, inc)
    assert early != passing


def test_s3_and_automatic_resolution_need_no_checklist(store: Store, clock: FakeClock) -> None:
    settings = settings_for(SITE, store.url)
    minor = _declare(store, settings, clock.now(), severity=3)
    _resolve(store, settings, minor, clock.now() + 60)
    assert _status(store, minor) == "resolved"
    major = _declare(store, settings, clock.now(), severity=1)
    with store.begin() as conn:  # what the alert pipeline does when every alert recovered
        escalation.resolve(conn, settings, major, "nachtwacht", clock.now() + 60, "recovered")
    assert _status(store, major) == "resolved"


def test_a_status_update_to_resolved_is_held_to_the_same_rule(
    sqlite_store: Store, clock: FakeClock
) -> None:
    settings = settings_for(SITE, sqlite_store.url)
    inc = _declare(sqlite_store, settings, clock.now())
    with pytest.raises(IncidentError), sqlite_store.begin() as conn:
        escalation.post_update(
            conn, settings, inc, "olga", clock.now(), "all good", "resolved", gate=resolution_gate
        )
    assert _status(sqlite_store, inc) == "investigating"


# -- the three doors ------------------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "nachtwacht.yaml"
    path.write_text(f"store:\n  url: sqlite:///{tmp_path / 'nw.db'}\n" + SITE)
    return path


def test_cli_resolve_refuses_then_takes_a_skip_reason(config: Path) -> None:
    declared = runner.invoke(
        cli, ["incident", "declare", "--title", "db down", "-s", "1", "-c", str(config)]
    )
    assert declared.exit_code == 0, declared.output
    refused = runner.invoke(cli, ["incident", "resolve", "1", "-c", str(config)])
    assert refused.exit_code == 1
    assert "error: S1 incident 1 cannot be resolved yet" in refused.output
    done = runner.invoke(
        cli,
        ["incident", "resolve", "1", "--skip-checklist", "verified by hand", "-c", str(config)],
    )
    assert done.exit_code == 0, done.output
    assert "RESOLVED" in done.output and "restoration checklist skipped: verified by hand" in (
        done.output
    )


@pytest.fixture
def client(sqlite_store: Store, clock: FakeClock) -> Iterator[TestClient]:
    settings = settings_for(SITE, sqlite_store.url)
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    token = admin_token(sqlite_store, clock.now())
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def test_api_resolve_answers_409_then_accepts_skip_checklist(client: TestClient) -> None:
    inc = client.post("/api/v1/incidents", json={"title": "db down", "severity": 1}).json()["id"]
    refused = client.post(f"/api/v1/incidents/{inc}/resolve", json={"message": "fixed"})
    assert refused.status_code == 409
    assert refused.json()["field"] == "skip_checklist"
    assert "cannot be resolved yet" in refused.json()["detail"]
    done = client.post(
        f"/api/v1/incidents/{inc}/resolve",
        json={"message": "fixed", "skip_checklist": "checked by hand"},
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "resolved"


def test_dashboard_resolve_form_shows_the_refusal_then_takes_a_reason(
    client: TestClient, sqlite_store: Store, clock: FakeClock
) -> None:
    inc = client.post("/api/v1/incidents", json={"title": "db down", "severity": 2}).json()["id"]
    page = client.get(f"/incidents/{inc}", headers={"Accept": "text/html"}).text
    assert 'name="skip_checklist"' in page
    refused = client.post(f"/incidents/{inc}/resolve", data={"message": "fixed"})
    assert refused.status_code == 409 and "cannot be resolved yet" in refused.text
    _run(sqlite_store, inc, clock.now())
    allowed = client.post(
        f"/incidents/{inc}/resolve", data={"message": "fixed"}, follow_redirects=False
    )
    assert allowed.status_code == 303
    assert client.get(f"/api/v1/incidents/{inc}").json()["status"] == "resolved"
