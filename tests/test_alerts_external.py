"""POST /api/v1/alerts: external alerts through the real pipeline, on a real store."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from nachtwacht.alerts import service
from nachtwacht.alerts.api import ingest_router, router
from nachtwacht.alerts.external import from_generic, generic_fingerprint
from nachtwacht.clock import Clock, FakeClock
from nachtwacht.config.schema import Settings
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.web import errors
from nachtwacht.web.state import AppState, install
from tests.helpers import settings_for

SITE = """
site: ext-test
probes:
  - name: db
    kind: tcp
    host: 127.0.0.1
    port: 1
    component: database
"""


@dataclass
class AlertsRuntime:
    """What the alert doors use of the app's runtime: real settings, store and clock.

    `on_wake` stands in for the outbox's wake-up so tests can see when (and after what) the
    router wakes it; the real runtime's outbox is another helper's work.
    """

    settings: Settings
    store: Store
    clock: Clock
    on_wake: Callable[[], None] | None = None
    wakes: list[float] = field(default_factory=list)

    def wake_outbox(self) -> None:
        self.wakes.append(self.clock.now())
        if self.on_wake is not None:
            self.on_wake()


def alerts_app(settings: Settings, store: Store, clock: Clock) -> tuple[FastAPI, AlertsRuntime]:
    """The alert router with the app's error handlers, as `create_app` mounts it."""
    app = FastAPI()
    errors.install(app)
    app.include_router(router)
    app.include_router(ingest_router)
    runtime = AlertsRuntime(settings, store, clock)
    install(app, AppState.of(runtime))
    return app, runtime


@pytest.fixture
def rt_client(store: Store, clock: FakeClock) -> Iterator[tuple[TestClient, AlertsRuntime]]:
    app, runtime = alerts_app(settings_for(SITE, store.url), store, clock)
    with TestClient(app) as client:
        yield client, runtime


@pytest.fixture
def client(rt_client: tuple[TestClient, AlertsRuntime]) -> TestClient:
    """On each store backend: for the behaviour whose SQL matters."""
    return rt_client[0]


@pytest.fixture
def lite(sqlite_store: Store, clock: FakeClock) -> Iterator[TestClient]:
    """On SQLite only: for request validation and mapping, where the backend does not matter."""
    app, _ = alerts_app(settings_for(SITE, sqlite_store.url), sqlite_store, clock)
    with TestClient(app) as client:
        yield client


def _count(store: Store, table: Any) -> int:
    with store.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _alerts(store: Store) -> list[dict[str, Any]]:
    with store.connect() as conn:
        return [dict(r) for r in conn.execute(select(t.alerts).order_by(t.alerts.c.id)).mappings()]


def test_firing_alert_opens_an_alert_and_an_incident(
    client: TestClient, store: Store, clock: FakeClock
) -> None:
    response = client.post(
        "/api/v1/alerts",
        json={
            "title": "Backups failed",
            "component": "backup",
            "severity": 1,
            "message": "restic exited 1",
            "started_at": "2027-01-15T07:55:00Z",
            "labels": {"host": "db1"},
        },
    )
    assert response.status_code == 200, response.text
    [result] = response.json()["alerts"]
    assert result["action"] == "opened" and result["muted_by"] is None
    assert result["fingerprint"] == generic_fingerprint("backup", "Backups failed")

    [alert] = _alerts(store)
    assert alert["id"] == result["alert_id"] and alert["incident_id"] == result["incident_id"]
    assert (alert["source"], alert["component"], alert["severity"]) == ("api", "backup", 1)
    assert alert["started_at"] == 1_800_000_000.0 - 300  # 07:55 UTC, five minutes earlier
    assert alert["fired_at"] == clock.now()
    assert json.loads(alert["labels_json"]) == {"host": "db1"}
    with store.connect() as conn:
        incident = (
            conn.execute(select(t.incidents).where(t.incidents.c.id == result["incident_id"]))
            .mappings()
            .one()
        )
    assert incident["severity"] == 1 and incident["component"] == "backup"
    assert incident["status"] == "investigating"

    listed = client.get("/api/v1/alerts", params={"status": "firing"}).json()
    assert [a["title"] for a in listed] == ["Backups failed"]
    assert listed[0]["labels"] == {"host": "db1"}
    assert listed[0]["started_at"] == "2027-01-15T07:55:00Z"


def test_same_fingerprint_again_is_deduplicated(
    client: TestClient, store: Store, clock: FakeClock
) -> None:
    body = {"title": "Queue backlog", "component": "workers", "severity": 3}
    first = client.post("/api/v1/alerts", json=body).json()["alerts"][0]
    clock.advance(60)
    second = client.post("/api/v1/alerts", json=body | {"message": "still 5000 jobs"}).json()
    again = second["alerts"][0]
    assert again["action"] == "deduplicated"
    assert (again["alert_id"], again["incident_id"]) == (first["alert_id"], first["incident_id"])
    [alert] = _alerts(store)
    assert alert["last_seen"] == clock.now() and alert["message"] == "still 5000 jobs"
    assert _count(store, t.incidents) == 1


def test_resolved_status_resolves_the_open_alert(
    client: TestClient, store: Store, clock: FakeClock
) -> None:
    body = {"title": "Certificate renewal failed", "component": "web"}
    counted = dict(service.COUNTS.counts)  # nachtwacht_alerts_{raised,resolved}_total
    opened = client.post("/api/v1/alerts", json=body).json()["alerts"][0]
    clock.advance(600)
    resolved = client.post("/api/v1/alerts", json=body | {"status": "resolved"}).json()
    assert resolved["alerts"][0]["action"] == "resolved"
    assert resolved["alerts"][0]["alert_id"] == opened["alert_id"]
    [alert] = _alerts(store)
    assert alert["status"] == "resolved" and alert["resolved_at"] == clock.now()
    assert client.get("/api/v1/alerts").json() == []
    assert [a["id"] for a in client.get("/api/v1/alerts?status=resolved").json()] == [alert["id"]]
    # a second "resolved" has nothing left to resolve
    again = client.post("/api/v1/alerts", json=body | {"status": "resolved"}).json()
    assert again["alerts"][0]["action"] == "ignored"
    moved = {k: n - counted[k] for k, n in service.COUNTS.counts.items() if k in counted}
    assert moved[("api", "raised")] == moved[("api", "resolved")] == 1


def test_bad_severity_is_422_naming_the_field_and_writes_nothing(
    client: TestClient, store: Store
) -> None:
    response = client.post("/api/v1/alerts", json={"title": "x", "severity": 5})
    assert response.status_code == 422
    assert response.json()["field"] == "severity"
    assert "1, 2 or 3" in response.json()["detail"]
    assert _count(store, t.alerts) == 0 and _count(store, t.incidents) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"component": "web"}, "title"),
        ({"title": "x", "status": "broken"}, "status"),
        ({"title": "x", "started_at": "yesterday"}, "started_at"),
        ({"title": "x", "started_at": "2027-01-15T07:55:00"}, "started_at"),  # no offset
        ({"title": "x", "colour": "red"}, "colour"),
    ],
)
def test_invalid_generic_alert_is_422_naming_the_field(
    lite: TestClient, sqlite_store: Store, body: dict[str, Any], field: str
) -> None:
    response = lite.post("/api/v1/alerts", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert _count(sqlite_store, t.alerts) == 0


def test_api_fingerprint_cannot_resolve_a_probe_alert(
    lite: TestClient, sqlite_store: Store, clock: FakeClock
) -> None:
    settings = settings_for(SITE, sqlite_store.url)
    probe_signal = service.Signal(
        fingerprint="probe:db",
        source="probe",
        title="db is critical",
        component="database",
        severity=1,
        firing=True,
        started_at=clock.now(),
        detected_at=clock.now(),
        probe_name="db",
        state="critical",
    )
    with sqlite_store.begin() as conn:
        service.process(conn, settings, probe_signal, clock.now())
    body = {"title": "db", "fingerprint": "probe:db", "status": "resolved"}
    result = lite.post("/api/v1/alerts", json=body).json()["alerts"][0]
    assert result["action"] == "ignored" and result["fingerprint"] == "api:probe:db"
    assert [a["status"] for a in _alerts(sqlite_store)] == ["firing"]


def test_explicit_fingerprint_deduplicates_across_titles(
    lite: TestClient, sqlite_store: Store
) -> None:
    first = lite.post("/api/v1/alerts", json={"title": "disk 91%", "fingerprint": "disk-db1"})
    second = lite.post("/api/v1/alerts", json={"title": "disk 95%", "fingerprint": "disk-db1"})
    assert second.json()["alerts"][0]["action"] == "deduplicated"
    assert first.json()["alerts"][0]["fingerprint"] == "api:disk-db1"
    assert _count(sqlite_store, t.alerts) == 1


def test_outbox_is_woken_after_the_alert_is_committed(
    rt_client: tuple[TestClient, AlertsRuntime], store: Store
) -> None:
    client, runtime = rt_client
    seen: list[int] = []
    # read from another connection: the wake-up must come after the commit, or the outbox
    # would wake to find nothing
    runtime.on_wake = lambda: seen.append(_count(store, t.alerts))
    client.post("/api/v1/alerts", json={"title": "Payment gateway down", "severity": 1})
    assert seen == [1]
    client.post("/api/v1/alerts", json={"title": "Payment gateway down", "severity": 1})
    assert seen == [1]  # a duplicate changes nothing, so nothing to send


def test_alert_in_a_silenced_component_is_recorded_but_muted(
    lite: TestClient, sqlite_store: Store
) -> None:
    silence = lite.post(
        "/api/v1/silences",
        json={"component": "reports", "duration": "1h", "comment": "rebuilding"},
    )
    assert silence.status_code == 201, silence.text
    result = lite.post("/api/v1/alerts", json={"title": "slow", "component": "reports"})
    assert result.json()["alerts"][0]["muted_by"] == f"silence:{silence.json()['id']}"
    [alert] = _alerts(sqlite_store)
    assert alert["muted_by"] == f"silence:{silence.json()['id']}"


def test_from_generic_defaults() -> None:
    signal = from_generic({"title": "Nightly export missing"}, 1_800_000_000.0)
    assert signal.component == "external" and signal.severity == 2 and signal.firing
    assert signal.fingerprint == generic_fingerprint("external", "Nightly export missing")
    assert signal.started_at == signal.detected_at == 1_800_000_000.0
    assert signal.source == "api"


def test_started_at_in_the_future_is_clamped_to_now() -> None:
    # the sender's clock runs ahead; an alert cannot have started after we heard of it
    signal = from_generic({"title": "x", "started_at": "2030-01-01T00:00:00+00:00"}, 1.8e9)
    assert signal.started_at == 1.8e9
