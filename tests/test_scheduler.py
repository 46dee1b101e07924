"""The scheduler and runtime, driven by a fake clock against a real TCP target."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from nachtwacht.clock import FakeClock
from nachtwacht.engine.runtime import Runtime
from nachtwacht.probes import service
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.conftest import closed_port, free_port
from tests.helpers import TcpTarget, settings_for


def _config(port: int, retries: int = 2, retry_interval: str = "10s") -> str:
    return f"""
engine:
  startup_spread: 5s
probes:
  - name: db-port
    kind: tcp
    host: 127.0.0.1
    port: {port}
    interval: 60s
    retries: {retries}
    retry_interval: {retry_interval}
    component: database
  - name: app-port
    kind: tcp
    host: 127.0.0.1
    port: {port}
    interval: 30s
    depends_on: [db-port]
"""


async def _build(store: Store, clock: FakeClock, yaml_text: str) -> Runtime:
    return Runtime.build(settings_for(yaml_text, store.url), store, clock)


async def test_every_probe_runs_within_the_startup_spread(
    sqlite_store: Store, clock: FakeClock
) -> None:
    target = TcpTarget(free_port())
    await target.start()
    rt = await _build(sqlite_store, clock, _config(target.port))
    await rt.scheduler.run_due()
    clock.advance(5)
    await rt.scheduler.run_due()
    assert all(r.checks == 1 for r in rt.scheduler.slots.values())
    rt.writer.flush_sync()
    with sqlite_store.connect() as conn:
        states = {p["name"]: p["state"] for p in service.probe_overview(conn)}
    assert states == {"db-port": "ok", "app-port": "ok"}
    await rt.stop()
    await target.stop()


async def test_outage_goes_pending_then_critical_on_the_retry_interval(
    store: Store, clock: FakeClock
) -> None:
    target = TcpTarget(free_port())
    await target.start()
    rt = await _build(store, clock, _config(target.port, retries=2, retry_interval="10s"))
    clock.advance(5)
    await rt.scheduler.run_due()
    db = rt.scheduler.by_name["db-port"]
    assert db.state.state.value == "ok"
    await target.stop()

    # next regular check finds the port closed: pending, and re-checked after 10 s, not 60 s
    clock.advance(60)
    await rt.scheduler.run_due()
    assert db.state.state.value == "pending"
    assert 0 < db.due - clock.now() <= 10
    clock.advance(10)
    await rt.scheduler.run_due()
    assert db.state.state.value == "pending"
    clock.advance(10)
    await rt.scheduler.run_due()
    assert db.state.state.value == "critical"
    assert "Connection refused" in (db.state.last_message or "")
    # once confirmed, back to the normal interval
    assert db.due - clock.now() > 30

    rt.writer.flush_sync()
    with store.connect() as conn:
        rows = conn.execute(
            select(t.state_changes.c.to_state, t.state_changes.c.first_failure)
            .where(t.state_changes.c.probe_id == db.probe_id)
            .order_by(t.state_changes.c.id)
        ).all()
    assert [r.to_state for r in rows] == ["ok", "pending", "critical"]
    assert rows[-1].first_failure == rows[1].first_failure  # the outage began at the first failure
    await rt.stop()


async def test_state_survives_a_restart_without_new_transitions(
    sqlite_store: Store, clock: FakeClock
) -> None:
    port = closed_port()  # nothing listens: every check fails
    rt = await _build(sqlite_store, clock, _config(port, retries=0))
    clock.advance(60)
    await rt.scheduler.run_due()
    await rt.stop()
    db_id = rt.scheduler.by_name["db-port"].probe_id
    only_db = select(t.state_changes).where(t.state_changes.c.probe_id == db_id)
    with sqlite_store.connect() as conn:
        before = conn.execute(only_db).all()

    rt2 = await _build(sqlite_store, clock, _config(port, retries=0))
    assert rt2.scheduler.by_name["db-port"].state.state.value == "critical"
    clock.advance(60)
    await rt2.scheduler.run_due()
    await rt2.stop()
    with sqlite_store.connect() as conn:
        after = conn.execute(only_db).all()
    assert len(after) == len(before)  # still critical: nothing new to record


async def test_cadence_is_kept_so_lag_does_not_accumulate(
    sqlite_store: Store, clock: FakeClock
) -> None:
    target = TcpTarget(free_port())
    await target.start()
    rt = await _build(sqlite_store, clock, _config(target.port))
    app = rt.scheduler.by_name["app-port"]
    first_due = app.due
    clock.set(first_due + 2)  # the scheduler woke 2 s late
    await rt.scheduler.run_due()
    assert app.due == pytest.approx(first_due + 30)
    await rt.stop()
    await target.stop()


async def test_removed_probe_is_disabled_but_keeps_its_history(
    sqlite_store: Store, clock: FakeClock
) -> None:
    port = free_port()
    rt = await _build(sqlite_store, clock, _config(port))
    await rt.stop()
    only_db = _config(port).split("  - name: app-port")[0]
    rt2 = await _build(sqlite_store, clock, only_db)
    assert set(rt2.scheduler.by_name) == {"db-port"}
    with sqlite_store.connect() as conn:
        rows = {r.name: r.enabled for r in conn.execute(select(t.probes))}
    assert rows == {"db-port": True, "app-port": False}
    await rt2.stop()


async def test_rollups_module_keeps_the_dashboard_uptime_cache_warm(
    sqlite_store: Store, clock: FakeClock
) -> None:
    from nachtwacht.probes.uptime import WINDOWS, watermarks

    target = TcpTarget(free_port())
    await target.start()
    rt = await _build(sqlite_store, clock, _config(target.port))
    await rt.scheduler.run_now()
    rt.writer.flush_sync()
    clock.advance(3 * 3600)
    await rt._rollups(clock.now())
    with sqlite_store.connect() as conn:
        hour_mark, _ = watermarks(conn)
    assert hour_mark is not None
    for label, seconds in WINDOWS.items():
        key = (int((clock.now() - seconds) // 3600), hour_mark)
        assert rt.uptime_cache.get(f"hours:{label}", key) is not None, label
    await rt.stop()
    await target.stop()
