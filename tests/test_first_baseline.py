"""The first performance baseline captures itself once the system has run healthy long enough,
so a fresh install can resolve an S1/S2 without anyone knowing `nachtwacht baseline capture`.

The `first_baseline` engine module is ticked as the engine ticks it, on a FakeClock.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import insert, select

from nachtwacht.checklist import items
from nachtwacht.checklist.items import Context
from nachtwacht.clock import FakeClock
from nachtwacht.engine.runtime import Runtime
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.helpers import settings_for
from tests.test_analytics_data import add_results

HOUR = 3600.0
SITE = """
site: first-baseline
probes:
  - {name: api, kind: tcp, host: 127.0.0.1, port: 1, component: web}
"""


def baselines(store: Store) -> list[dict]:
    with store.connect() as conn:
        return [dict(r) for r in conn.execute(select(t.baselines)).mappings()]


def running_since(store: Store, start: float, hours: int) -> None:
    """A result every 10 minutes for `hours` from `start`."""
    with store.begin() as conn:
        api = conn.execute(select(t.probes.c.id).where(t.probes.c.name == "api")).scalar_one()
        add_results(conn, api, [(start + k * 600, None, 20.0 + k % 3) for k in range(hours * 6)])


def alert(store: Store, fired: float, resolved: float | None) -> None:
    with store.begin() as conn:
        conn.execute(
            insert(t.alerts).values(
                fingerprint="probe:api",
                source="probe",
                title="api down",
                component="web",
                severity=2,
                status="firing" if resolved is None else "resolved",
                started_at=fired,
                fired_at=fired,
                last_seen=resolved or fired,
                resolved_at=resolved,
            )
        )


def performance(rt: Runtime) -> items.ItemResult:
    return asyncio.run(items.performance(Context(rt.settings, rt.store, rt.clock, "tester")))


def test_the_first_baseline_is_captured_after_a_healthy_day_and_only_once(
    store: Store, clock: FakeClock
) -> None:
    rt = Runtime.build(settings_for(SITE, store.url), store, clock)
    start = clock.now()
    running_since(store, start, 60)

    # until then the checklist's performance item says what to do instead of failing
    waiting = performance(rt)
    assert waiting.ok is True
    assert "no baseline yet: one is captured automatically after 24 h of healthy operation" in (
        waiting.detail
    )
    assert "nachtwacht baseline capture" in waiting.detail

    assert asyncio.run(rt.engine.tick_once("first_baseline"))
    clock.advance(23 * HOUR)
    asyncio.run(rt.engine.tick_once("first_baseline"))
    assert baselines(store) == []  # not running a day yet

    clock.advance(HOUR + 60)
    assert asyncio.run(rt.engine.tick_once("first_baseline"))
    [first] = baselines(store)
    assert first["captured_by"] == "nachtwacht" and first["name"] == "first baseline (24 h healthy)"
    assert first["window_end"] - first["window_start"] == 24 * HOUR
    assert '"api"' in first["data_json"]
    passed = performance(rt)
    assert passed.ok and "baseline 'first baseline (24 h healthy)'" in passed.detail

    clock.advance(30 * HOUR)
    asyncio.run(rt.engine.tick_once("first_baseline"))
    assert len(baselines(store)) == 1  # later baselines are taken on purpose, after incidents


def test_an_alert_in_the_last_day_puts_the_first_baseline_off(
    store: Store, clock: FakeClock
) -> None:
    rt = Runtime.build(settings_for(SITE, store.url), store, clock)
    start = clock.now()
    running_since(store, start, 60)
    alert(store, start + 5 * HOUR, start + 10 * HOUR)
    clock.advance(25 * HOUR)
    asyncio.run(rt.engine.tick_once("first_baseline"))
    assert baselines(store) == []  # resolved only 15 h ago
    clock.advance(9 * HOUR + 60)
    asyncio.run(rt.engine.tick_once("first_baseline"))
    assert len(baselines(store)) == 1

    alert(store, clock.now(), None)  # firing now: no difference once there is a baseline
    assert performance(rt).ok


def test_a_firing_alert_means_no_baseline_by_itself(store: Store, clock: FakeClock) -> None:
    rt = Runtime.build(settings_for(SITE, store.url), store, clock)
    start = clock.now()
    running_since(store, start, 60)
    alert(store, start + HOUR, None)
    clock.advance(48 * HOUR)
    asyncio.run(rt.engine.tick_once("first_baseline"))
    assert baselines(store) == []


def test_with_auto_after_null_nothing_captures_itself_and_the_checklist_says_so(
    sqlite_store: Store, clock: FakeClock
) -> None:
    text = SITE + "analytics:\n  baseline:\n    auto_after: null\n"
    off = Runtime.build(settings_for(text, sqlite_store.url), sqlite_store, clock)
    assert "first_baseline" not in off.engine.modules
    detail = performance(off).detail
    assert performance(off).ok
    assert "automatically" not in detail and "nachtwacht baseline capture" in detail
