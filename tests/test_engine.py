"""Engine modules are isolated: one that raises is marked degraded and retried; others go on."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from nachtwacht.clock import FakeClock
from nachtwacht.engine.core import Engine
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store


async def test_a_failing_module_never_stops_the_others(sqlite_store: Store) -> None:
    engine = Engine(sqlite_store, FakeClock())
    ticks = {"probes": 0, "analytics": 0}

    async def probes(now: float) -> None:
        ticks["probes"] += 1

    async def analytics(now: float) -> None:
        ticks["analytics"] += 1
        raise ValueError("bad data")

    engine.add("probes", 0.01, probes)
    engine.add("analytics", 0.01, analytics)
    engine.start()
    for _ in range(200):
        if ticks["probes"] >= 5 and ticks["analytics"] >= 2:
            break
        await asyncio.sleep(0.01)
    await engine.shutdown()
    assert ticks["probes"] >= 5
    assert ticks["analytics"] >= 2  # retried after failing
    health = {h["module"]: h for h in engine.health()}
    assert health["probes"]["healthy"] is True
    assert health["analytics"]["healthy"] is False
    assert health["analytics"]["consecutive_errors"] == ticks["analytics"]


async def test_module_health_is_persisted_for_the_status_command(sqlite_store: Store) -> None:
    clock = FakeClock()
    engine = Engine(sqlite_store, clock)

    async def broken(now: float) -> None:
        raise RuntimeError("boom")

    engine.add("broken", 10, broken)
    await engine.tick_once("broken")
    engine.persist_health(clock.now())
    engine.persist_health(clock.now())  # an update, not a second row
    with sqlite_store.connect() as conn:
        rows = conn.execute(select(t.module_health)).all()
    assert len(rows) == 1
    assert rows[0].module == "broken" and rows[0].consecutive_errors == 1
    assert rows[0].last_error == "RuntimeError: boom"

    async def fixed(now: float) -> None:
        return None

    engine.modules["broken"].tick = fixed
    assert await engine.tick_once("broken") is True
    assert engine.health()[0]["healthy"] is True
