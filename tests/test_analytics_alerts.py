"""Analytics alerts through the real runtime and incident pipeline, driven by a FakeClock.

The `analytics` engine module is ticked as the engine ticks it; its alerts must open incidents
of the right severity, deduplicate on re-evaluation, worsen, and resolve when the condition
clears. In fallback mode it does nothing, while a probe still pages.
"""

from __future__ import annotations

import random
from typing import Any

from sqlalchemy import select, update

from nachtwacht.analytics import service
from nachtwacht.analytics.alerts import WATERMARK
from nachtwacht.clock import FakeClock
from nachtwacht.engine.runtime import Runtime
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.conftest import closed_port
from tests.helpers import settings_for
from tests.test_analytics_data import HOUR, add_hours, add_issue, add_results

SITE = """
site: analytics-alerts
analytics:
  interval: 1m
  alerts:
    spike_severity: 2
probes:
  - {name: root-disk, kind: host, metric: disk, mount: /, component: host, interval: 1m}
  - {name: api, kind: tcp, host: 127.0.0.1, port: 1, component: web}
"""


async def runtime(store: Store, clock: FakeClock, yaml_text: str = SITE) -> Runtime:
    return Runtime.build(settings_for(yaml_text, store.url), store, clock)


def alerts_of(store: Store, prefix: str = "analytics:") -> list[dict[str, Any]]:
    a = t.alerts.c
    with store.connect() as conn:
        rows = conn.execute(
            select(t.alerts).where(a.fingerprint.like(prefix + "%")).order_by(a.id)
        ).mappings()
        return [dict(r) for r in rows]


def incident(store: Store, incident_id: int) -> dict[str, Any]:
    with store.connect() as conn:
        row = conn.execute(select(t.incidents).where(t.incidents.c.id == incident_id))
        return dict(row.mappings().one())


def probe_id(store: Store, name: str) -> int:
    with store.connect() as conn:
        return conn.execute(select(t.probes.c.id).where(t.probes.c.name == name)).scalar_one()


def disk_samples(now: float, start_used: float, rate: float, seed: int) -> list:
    """Six hours of one sample a minute up to `now`, used % rising by `rate` per hour."""
    rng = random.Random(seed)
    return [
        (now - (360 - k) * 60, start_used + rate * k / 60 + rng.gauss(0, 0.1), None)
        for k in range(1, 361)
    ]


async def test_disk_filling_opens_s2_worsens_to_s1_and_resolves_when_cleaned(
    store: Store, clock: FakeClock
) -> None:
    rt = await runtime(store, clock)
    disk = probe_id(store, "root-disk")
    with store.begin() as conn:
        # 44 → 62 % in six hours: 38 points left at 3 per hour, full in ~12.7 h: S2
        add_results(conn, disk, disk_samples(clock.now(), 44.0, 3.0, seed=1))
    assert await rt.engine.tick_once("analytics")

    [alert] = alerts_of(store)
    assert alert["fingerprint"] == "analytics:disk:root-disk" and alert["status"] == "firing"
    assert (alert["severity"], alert["component"], alert["source"]) == (2, "host", "analytics")
    assert "full within 24 h" in alert["title"] and "full in 12." in alert["message"]
    inc = incident(store, alert["incident_id"])
    assert (inc["severity"], inc["status"], inc["component"]) == (2, "investigating", "host")

    # evaluated again: the same alert, no second incident
    clock.advance(60)
    assert await rt.engine.tick_once("analytics")
    assert [a["id"] for a in alerts_of(store)] == [alert["id"]]

    # six hours later it fills at 5 per hour: 62 → 92 %, full in ~1.6 h: S1
    clock.advance(6 * HOUR)
    with store.begin() as conn:
        add_results(conn, disk, disk_samples(clock.now(), 62.0, 5.0, seed=2))
    assert await rt.engine.tick_once("analytics")
    [worse] = alerts_of(store)
    assert worse["id"] == alert["id"] and worse["severity"] == 1
    assert "full within 4 h" in worse["title"]
    assert incident(store, alert["incident_id"])["severity"] == 1

    # cleaned up: flat at 30 % for six hours, the alert and its incident resolve
    clock.advance(6 * HOUR)
    with store.begin() as conn:
        add_results(
            conn, disk, [(ts, 30.0, None) for ts, _, _ in disk_samples(clock.now(), 0, 0, 3)]
        )
    assert await rt.engine.tick_once("analytics")
    [done] = alerts_of(store)
    assert done["status"] == "resolved"
    assert incident(store, alert["incident_id"])["status"] == "resolved"
    await rt.stop()


async def test_new_production_issue_pages_s3_once_and_resolves_with_the_issue(
    store: Store, clock: FakeClock
) -> None:
    rt = await runtime(store, clock)
    with store.begin() as conn:
        add_issue(conn, "known before analytics started", clock.now() - 86400)
    assert await rt.engine.tick_once("analytics")  # the first pass only sets the watermark
    assert alerts_of(store) == []
    with store.connect() as conn:
        assert store.get_meta(conn, WATERMARK) is not None

    clock.advance(300)
    with store.begin() as conn:
        new = add_issue(conn, "ZeroDivisionError: division by zero", clock.now() - 30)
        add_issue(conn, "staging only", clock.now() - 20, environment="staging")
        add_issue(conn, "ignored already", clock.now() - 10, status="ignored")
    assert await rt.engine.tick_once("analytics")
    [alert] = alerts_of(store)
    assert alert["fingerprint"] == f"analytics:new-issue:{new}"
    assert alert["severity"] == 3 and alert["component"] == "errors"
    assert "ZeroDivisionError" in alert["title"]
    inc = incident(store, alert["incident_id"])
    assert inc["severity"] == 3 and inc["status"] == "investigating"

    clock.advance(300)
    assert await rt.engine.tick_once("analytics")  # nothing new: no second alert
    assert len(alerts_of(store)) == 1

    with store.begin() as conn:
        conn.execute(
            update(t.error_issues).where(t.error_issues.c.id == new).values(status="resolved")
        )
    clock.advance(300)
    assert await rt.engine.tick_once("analytics")
    assert alerts_of(store)[0]["status"] == "resolved"
    assert incident(store, alert["incident_id"])["status"] == "resolved"
    await rt.stop()


async def test_error_spike_pages_with_the_configured_severity_and_clears(
    store: Store, clock: FakeClock
) -> None:
    rt = await runtime(store, clock)
    now_hour = int(clock.now() // HOUR)
    with store.begin() as conn:
        steady = add_issue(conn, "steady", clock.now() - 8 * 86400)
        counts = {h: 3 for h in range(now_hour - 7 * 24, now_hour)}
        counts[now_hour] = 60  # the current hour: twenty times the usual
        add_hours(conn, steady, counts)
        stage = add_issue(conn, "staging storm", clock.now() - 8 * 86400, environment="staging")
        add_hours(conn, stage, {now_hour: 500})  # not production: no page
    assert await rt.engine.tick_once("analytics")
    [alert] = alerts_of(store)
    assert alert["fingerprint"] == "analytics:spike:production"
    assert alert["severity"] == 2  # analytics.alerts.spike_severity in the config
    assert "60 error events" in alert["message"]
    assert incident(store, alert["incident_id"])["severity"] == 2

    # two hours on, the spike hour is history: the alert resolves
    clock.advance(2 * HOUR)
    with store.begin() as conn:
        add_hours(conn, steady, {now_hour + 1: 3, now_hour + 2: 2})
    assert await rt.engine.tick_once("analytics")
    assert alerts_of(store)[0]["status"] == "resolved"
    await rt.stop()


async def test_latency_regression_against_the_latest_baseline(
    store: Store, clock: FakeClock
) -> None:
    rt = await runtime(store, clock)
    api = probe_id(store, "api")
    with store.begin() as conn:
        add_results(conn, api, [(clock.now() - 3600 + k * 60, None, 100.0) for k in range(60)])
    service.capture_baseline(store, rt.settings, clock.now(), "olga", "calm", 3600)
    assert await rt.engine.tick_once("analytics")
    assert alerts_of(store) == []  # the same hour: no regression

    clock.advance(3600)
    with store.begin() as conn:
        add_results(conn, api, [(clock.now() - 3600 + k * 60, None, 400.0) for k in range(60)])
    assert await rt.engine.tick_once("analytics")
    [alert] = alerts_of(store)
    assert alert["fingerprint"] == "analytics:latency:api"
    assert (alert["severity"], alert["component"]) == (3, "web")
    assert "p95 400 ms" in alert["message"] and "100 ms in baseline" in alert["message"]
    assert incident(store, alert["incident_id"])["severity"] == 3

    clock.advance(3600)
    with store.begin() as conn:
        add_results(conn, api, [(clock.now() - 3600 + k * 60, None, 110.0) for k in range(60)])
    assert await rt.engine.tick_once("analytics")
    assert alerts_of(store)[0]["status"] == "resolved"
    await rt.stop()


async def test_fallback_mode_stops_analytics_alerts_but_probes_still_page(
    sqlite_store: Store, clock: FakeClock
) -> None:
    port = closed_port()  # nothing listens there: the probe fails
    yaml_text = f"""
people:
  contacts:
    - {{id: olga, name: Olga, roles: [oncall_engineer], chat: "@olga"}}
notify:
  channels:
    hook: {{kind: webhook, url: "http://127.0.0.1:{closed_port()}/hook"}}
probes:
  - {{name: db, kind: tcp, host: 127.0.0.1, port: {port}, retries: 0, component: database,
      severity: 1}}
"""
    rt = await runtime(sqlite_store, clock, yaml_text)
    service.set_flag(sqlite_store, "disable_advanced_analytics", True, "admin", clock.now())
    with sqlite_store.begin() as conn:
        add_issue(conn, "old", clock.now() - 86400)
    assert await rt.engine.tick_once("analytics")
    with sqlite_store.connect() as conn:
        assert sqlite_store.get_meta(conn, WATERMARK) is None  # the module did nothing at all

    # probes, alerting and paging do not read the flag
    clock.advance(60)
    await rt.scheduler.run_due()
    await rt.alerting.drain()
    [probe_alert] = alerts_of(sqlite_store, "probe:")
    assert probe_alert["status"] == "firing" and probe_alert["severity"] == 1
    inc = incident(sqlite_store, probe_alert["incident_id"])
    assert inc["severity"] == 1 and inc["component"] == "database"
    with sqlite_store.connect() as conn:
        pages = conn.execute(
            select(t.outbox.c.kind).where(t.outbox.c.incident_id == inc["id"])
        ).all()
    assert pages, "the probe's incident queued no page"
    assert alerts_of(sqlite_store) == []

    # switched back at run time: the next pass works again
    service.set_flag(sqlite_store, "disable_advanced_analytics", False, "admin", clock.now())
    assert await rt.engine.tick_once("analytics")
    with sqlite_store.connect() as conn:
        assert sqlite_store.get_meta(conn, WATERMARK) is not None
    await rt.stop()
