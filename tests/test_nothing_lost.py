"""Nothing accepted is lost while the store is down: pings, external alerts, probe results.

In-process, on a real SQLite store, with the real app and runtime; the outage is a real
store that cannot open (its file is a directory) put where the runtime's store is. The real
network outages (a cut TCP connection to PostgreSQL) and kill -9 are in
test_nothing_lost_pg.py and test_nothing_lost_kill9.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, func, select
from typer.testing import CliRunner

from nachtwacht.alerts.api import ingest
from nachtwacht.alerts.external import (
    AlertmanagerWebhook,
    GenericAlert,
    signal_from_generic,
    signals_from_alertmanager,
)
from nachtwacht.auth import ingest_keys
from nachtwacht.cli.main import app as cli
from nachtwacht.clock import FakeClock
from nachtwacht.probes.results import State, Status
from nachtwacht.probes.service import ResultRow
from nachtwacht.probes.state import ProbeState, Transition
from nachtwacht.spool.log import SpoolError
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store, StoreError
from nachtwacht.web.app import create_app
from tests.helpers import admin_token, settings_for

TOKEN = "nightly-backup-token"
SITE = f"""
site: lost-test
notify:
  channels:
    hook: {{kind: webhook, url: "http://127.0.0.1:9/hook"}}
people:
  contacts:
    - {{id: alice, name: Alice, email: alice@example.org, roles: [oncall_engineer]}}
probes:
  - name: nightly
    kind: heartbeat
    token: {TOKEN}
    period: 1h
"""


@pytest.fixture
def served(sqlite_store: Store, clock: FakeClock) -> Iterator[tuple[TestClient, Any]]:
    app = create_app(settings_for(SITE, sqlite_store.url), sqlite_store, clock, start_engine=False)
    with TestClient(app) as client:
        yield client, app.state.nw.runtime


@contextmanager
def outage(runtime: Any, tmp_path: Path) -> Iterator[None]:
    """The runtime's store becomes one that cannot be opened, until the block ends."""
    where = tmp_path / "unreachable" / "nachtwacht.db"
    where.mkdir(parents=True, exist_ok=True)  # a directory where the database should be
    broken = Store(f"sqlite:///{where}")
    good = runtime.store
    runtime.store = runtime.drainer.store = runtime.writer.store = broken
    try:
        yield
    finally:
        runtime.store = runtime.drainer.store = runtime.writer.store = good
        broken.dispose()


def pings(store: Store) -> list[tuple[str, str | None]]:
    with store.connect() as conn:
        c = t.heartbeat_pings.c
        return [(r.event, r.body) for r in conn.execute(select(c.event, c.body).order_by(c.id))]


def test_pings_while_the_store_is_down_are_answered_200_and_stored_once_in_order(
    served: tuple[TestClient, Any], sqlite_store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    client, runtime = served
    assert client.post(f"/ping/{TOKEN}", content=b"a").status_code == 200  # direct
    with outage(runtime, tmp_path):
        for body, path in ((b"b", f"/ping/{TOKEN}/start"), (b"c", f"/ping/{TOKEN}/fail")):
            response = client.post(path, content=body)
            assert response.status_code == 200 and response.text == "OK"
        assert runtime.drainer.store_down_since == clock.now()
    assert pings(sqlite_store) == [("success", "a")]
    # the store is back but b and c still wait: d queues behind them, not ahead
    assert client.post(f"/ping/{TOKEN}", content=b"d").status_code == 200
    assert pings(sqlite_store) == [("success", "a")]
    assert runtime.drainer.drain_all() == 3
    client.post(f"/ping/{TOKEN}", content=b"e")  # nothing waits: direct again
    assert pings(sqlite_store) == [
        ("success", "a"),
        ("start", "b"),
        ("fail", "c"),
        ("success", "d"),
        ("success", "e"),
    ]
    assert runtime.drainer.drain_all() == 0


def test_a_ping_is_refused_503_only_when_the_spool_refuses_too(
    served: tuple[TestClient, Any], sqlite_store: Store, tmp_path: Path
) -> None:
    client, runtime = served
    runtime.spool.max_bytes = runtime.spool.bytes_used  # nothing more fits
    with outage(runtime, tmp_path):
        response = client.get(f"/ping/{TOKEN}")
    assert response.status_code == 503
    assert "not recorded" in response.json()["detail"] and "full" in response.json()["detail"]
    assert pings(sqlite_store) == [] and runtime.drainer.drain_all() == 0


class LostAnswer(Store):
    """The real store, but the next COMMIT's answer is lost: it committed, the caller hears
    an error (a connection cut at exactly that moment)."""

    lose_next = True

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with super().begin() as conn:
            yield conn
        if self.lose_next:
            self.lose_next = False
            raise StoreError("store x: server closed the connection unexpectedly")


def test_a_ping_whose_commit_answer_was_lost_is_stored_once(
    served: tuple[TestClient, Any], sqlite_store: Store
) -> None:
    client, runtime = served
    good = runtime.store
    runtime.store = LostAnswer(sqlite_store.url)
    try:
        assert client.post(f"/ping/{TOKEN}", content=b"once").status_code == 200
    finally:
        runtime.store.dispose()
        runtime.store = good
    [record] = runtime.spool.read(None)
    assert json.loads(record.payload)["maybe"] is True  # spooled: it may already be stored
    assert runtime.drainer.drain_all() == 1
    assert pings(sqlite_store) == [("success", "once")]


def _alerts(store: Store) -> dict[str, str]:
    with store.connect() as conn:
        rows = conn.execute(select(t.alerts.c.fingerprint, t.alerts.c.status)).all()
    return {fp: status for fp, status in rows}


def test_alerts_while_the_store_is_down_are_replayed_in_order_by_the_pipeline(
    served: tuple[TestClient, Any], sqlite_store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    client, runtime = served
    fire = GenericAlert(title="disk full", component="db", severity=1)
    calm = GenericAlert(title="disk full", component="db", severity=1, status="resolved")
    am = AlertmanagerWebhook.model_validate(
        {
            "alerts": [
                {"status": "firing", "labels": {"alertname": "A", "job": "x"}, "fingerprint": "1"},
                {"status": "firing", "labels": {"alertname": "B", "job": "x"}, "fingerprint": "2"},
            ]
        }
    )
    with outage(runtime, tmp_path):
        first = client.portal.call(
            ingest, runtime, "generic", fire, lambda now: [signal_from_generic(fire, now)]
        )
        clock.advance(30)
        second = client.portal.call(
            ingest, runtime, "generic", calm, lambda now: [signal_from_generic(calm, now)]
        )
        whole = client.portal.call(
            ingest, runtime, "alertmanager", am, lambda now: signals_from_alertmanager(am, now)
        )
    assert first["spooled"] and second["spooled"] and whole["spooled"]
    assert [a["action"] for a in whole["alerts"]] == ["spooled", "spooled"]
    assert _alerts(sqlite_store) == {}
    # through the real door while earlier alerts still wait: it queues behind them
    with sqlite_store.begin() as conn:
        key = ingest_keys.create_ingest_key(conn, "ext", "alerts", clock.now(), actor="tests")[
            "key"
        ]
    late = client.post(
        "/api/v1/alerts",
        json={"title": "queue full", "component": "mq"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert late.status_code == 200 and late.json()["spooled"] is True
    assert runtime.drainer.drain_all() == 4
    fp = signal_from_generic(fire, 0).fingerprint
    assert _alerts(sqlite_store) == {
        fp: "resolved",  # fired, then resolved: in the order they arrived
        "am:1": "firing",
        "am:2": "firing",
        signal_from_generic(GenericAlert(title="queue full", component="mq"), 0).fingerprint: (
            "firing"
        ),
    }
    with sqlite_store.connect() as conn:
        incidents = conn.execute(select(t.incidents.c.component, t.incidents.c.status)).all()
        pages = conn.execute(select(func.count()).select_from(t.outbox)).scalar_one()
    assert ("db", "resolved") in incidents and ("mq", "investigating") in incidents
    assert pages > 0  # the replayed alerts paged through the outbox like direct ones


def test_probe_results_spill_to_the_spool_and_replay_with_their_state(
    served: tuple[TestClient, Any], sqlite_store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    client, runtime = served
    writer = runtime.writer
    probe_id = runtime.scheduler.by_name["nightly"].probe_id
    now = clock.now()

    def result(ts: float, status: Status) -> ResultRow:
        return ResultRow(probe_id, ts, int(status), None, 1.0, 0.0, status.label)

    def state(s: State, ts: float, failures: int) -> ProbeState:
        return ProbeState(s, ts, failures, None, ts, Status.CRITICAL, None, 1.0, "late")

    with outage(runtime, tmp_path):
        writer.add(result(now, Status.OK), state(State.OK, now, 0), None)
        down = Transition(State.OK, State.CRITICAL, now + 1, now + 1)
        writer.add(result(now + 1, Status.CRITICAL), state(State.CRITICAL, now + 1, 1), down)
        client.portal.call(writer.tick, now + 1)
        assert writer.pending == 0 and writer.spilled == 2  # out of memory, onto disk
    # the store is back, but the spilled flush is not stored yet: this one follows it
    writer.add(result(now + 2, Status.CRITICAL), state(State.CRITICAL, now + 1, 2), None)
    client.portal.call(writer.tick, now + 2)
    assert writer.spilled == 3
    with sqlite_store.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.results)).scalar_one() == 0
    assert runtime.drainer.drain_all() == 2
    with sqlite_store.connect() as conn:
        ts = conn.execute(select(t.results.c.ts).order_by(t.results.c.id)).scalars().all()
        changes = conn.execute(select(t.state_changes.c.to_state)).scalars().all()
        final = conn.execute(
            select(t.probe_state.c.state, t.probe_state.c.failures).where(
                t.probe_state.c.probe_id == probe_id
            )
        ).one()
    assert ts == [now, now + 1, now + 2]
    assert changes == ["critical"]
    assert tuple(final) == ("critical", 2)  # the newest state, not an older one replayed last


def test_healthz_and_status_say_the_store_is_down_and_the_spool_is_filling(
    served: tuple[TestClient, Any], sqlite_store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    client, runtime = served
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(f"store:\n  url: {sqlite_store.url}\n" + SITE)
    # the details need a viewer; while the store is down the server cannot check a token, so
    # it takes one it verified recently: this one, now
    viewer = {"Authorization": f"Bearer {admin_token(sqlite_store, clock.now(), role='viewer')}"}
    assert client.get("/healthz", headers=viewer).json()["store"]["available"] is True
    with outage(runtime, tmp_path):
        for i in range(20):
            assert client.post(f"/ping/{TOKEN}", content=str(i).encode()).status_code == 200
        clock.advance(42)
        health = client.get("/healthz", headers=viewer)
        anonymous = client.get("/healthz")
        with pytest.raises(RuntimeError, match="store DOWN since"):
            client.portal.call(runtime._check_spool, clock.now())
    assert health.status_code == 503
    assert (anonymous.status_code, anonymous.json()) == (503, {"status": "degraded"})
    body = health.json()
    assert body["status"] == "degraded"
    assert body["store"]["available"] is False
    assert body["store"]["down_since"] == clock.now() - 42
    assert body["store"]["down_for_seconds"] == 42
    assert body["spool"]["backlog_bytes"] == runtime.spool.bytes_used > 0
    assert body["spool"]["fill"] == round(runtime.spool.bytes_used / runtime.spool.max_bytes, 4)
    assert "store DOWN since" in body["summary"]
    # `status` runs in another process: it reads serve's state file (and can read the store)
    result = CliRunner().invoke(cli, ["status", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert "serve: store DOWN since" in result.output
    assert "MB waiting" in result.output
    as_json = json.loads(CliRunner().invoke(cli, ["status", "--json", "-c", str(config)]).output)
    assert as_json["spool"]["serve"]["store"]["available"] is False
    assert as_json["overall"] == "critical"
    # once drained and checked again, healthy
    runtime.drainer.drain_all()
    client.portal.call(runtime._check_spool, clock.now())
    assert client.get("/healthz", headers=viewer).json()["store"]["available"] is True


def test_spool_error_is_a_503_for_alerts(
    served: tuple[TestClient, Any], tmp_path: Path, clock: FakeClock
) -> None:
    client, runtime = served
    with runtime.store.begin() as conn:
        key = ingest_keys.create_ingest_key(conn, "ext", "alerts", clock.now(), actor="tests")[
            "key"
        ]
    runtime.spool.append("alert", b"{}")  # an alert waits, so the next one must queue too
    runtime.spool.max_bytes = runtime.spool.bytes_used
    response = client.post(
        "/api/v1/alerts",
        json={"title": "x"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 503 and "not recorded" in response.json()["detail"]
    with pytest.raises(SpoolError):
        runtime.spool.append("alert", b"{}")


def test_an_alert_sender_verified_before_the_outage_is_accepted_during_it(
    served: tuple[TestClient, Any], sqlite_store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    client, runtime = served
    with sqlite_store.begin() as conn:
        key = ingest_keys.create_ingest_key(conn, "am", "alerts", clock.now(), actor="tests")["key"]
        other = ingest_keys.create_ingest_key(
            conn, "never-used", "alerts", clock.now(), actor="tests"
        )
    headers = {"Authorization": f"Bearer {key}"}
    before = client.post("/api/v1/alerts", json={"title": "a", "component": "db"}, headers=headers)
    assert before.status_code == 200 and before.json()["spooled"] is False
    with outage(runtime, tmp_path):
        clock.advance(600)
        during = client.post(
            "/api/v1/alerts", json={"title": "b", "component": "db"}, headers=headers
        )
        # a key never seen by this process cannot be checked now: the sender retries later
        unknown = client.post(
            "/api/v1/alerts",
            json={"title": "c", "component": "db"},
            headers={"Authorization": f"Bearer {other['key']}"},
        )
        clock.advance(25 * 3600)
        stale = client.post(
            "/api/v1/alerts", json={"title": "d", "component": "db"}, headers=headers
        )
    assert during.status_code == 200 and during.json()["spooled"] is True
    assert unknown.status_code == 503 and stale.status_code == 503
    assert runtime.drainer.drain_all() == 1
    titles = {a for a in _alerts(sqlite_store)}
    assert len(titles) == 2  # "a" directly, "b" replayed from the spool; nothing of c or d
