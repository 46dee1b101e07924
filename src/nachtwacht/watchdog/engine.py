"""Engine wiring: the dead man's switch (`deadman`) and the store-down S1 alarm (`storealarm`).

Both are reachable as `runtime.watchdog` (a `Watchdog`) for /healthz and the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nachtwacht.alerts.probe_alerts import title
from nachtwacht.probes.results import State
from nachtwacht.watchdog.deadman import DeadMan
from nachtwacht.watchdog.storealarm import StoreAlarm

if TYPE_CHECKING:
    from nachtwacht.engine.runtime import Runtime

STORE_ALARM_INTERVAL = 5.0


@dataclass
class Watchdog:
    deadman: DeadMan
    store_alarm: StoreAlarm

    def snapshot(self) -> dict[str, Any]:
        return {"deadman": self.deadman.snapshot(), "store_alarm": self.store_alarm.snapshot()}


def status_for(runtime: Runtime) -> dict[str, Any]:
    """What the dead man's switch reports: alive, and whether all is well."""
    failing = [
        str(m["module"])
        for m in runtime.engine.health()
        if m["consecutive_errors"] and m["module"] != "deadman"
    ]
    store_up = runtime.drainer.store_down_since is None
    return {
        "status": "ok" if store_up and not failing else "degraded",
        "store": "up" if store_up else "down",
        "spool_backlog_bytes": runtime.drainer.backlog_bytes,
        "unhealthy": failing,
    }


def failing_probes(runtime: Runtime) -> list[str]:
    """'component: probe STATE — message' for each probe failing now, worst first."""
    order = {State.CRITICAL: 0, State.WARNING: 1, State.UNKNOWN: 2}
    failing = [rt for rt in runtime.scheduler.slots.values() if rt.state.state in order]
    failing.sort(key=lambda rt: (order[rt.state.state], rt.config.severity, rt.config.name))
    return [
        f"{rt.config.component}: {title(rt.config, rt.state.state, rt.state.last_message)}"
        for rt in failing
    ]


def install(runtime: Runtime) -> None:
    cfg = runtime.settings.watchdog
    deadman = DeadMan(cfg, runtime.settings.site, runtime.clock, lambda: status_for(runtime))
    alarm = StoreAlarm(
        runtime.settings, runtime.store, runtime.clock, runtime.drainer, runtime.spool.directory
    )
    alarm.failing = lambda: failing_probes(runtime)
    runtime.watchdog = Watchdog(deadman, alarm)  # type: ignore[attr-defined]
    if cfg.deadman_url is not None:
        runtime.engine.add("deadman", float(cfg.deadman_interval), deadman.tick)
    if cfg.store_alarm:
        runtime.engine.add("storealarm", STORE_ALARM_INTERVAL, alarm.tick)
