"""Engine wiring: the `analytics` module evaluates analytics alerts every `analytics.interval`.

It runs beside the probe scheduler and the alert worker and shares nothing with them but the
alert pipeline's tables: in fallback mode (disable_advanced_analytics) it skips its work, and
probes, alerting, escalation and paging never consult the flag.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from nachtwacht.analytics import first_baseline, service

if TYPE_CHECKING:
    from nachtwacht.engine.runtime import Runtime

log = logging.getLogger(__name__)
MODULE = "analytics"
FIRST_BASELINE = "first_baseline"
FIRST_BASELINE_EVERY = 600.0  # seconds; cheap once a baseline exists


def install(runtime: Runtime) -> None:
    async def tick(now: float) -> None:
        report = await asyncio.to_thread(tick_sync, runtime, now)
        if any(o["action"] in ("opened", "resolved") or o["queued"] for o in report["outcomes"]):
            runtime.wake_outbox()

    runtime.engine.add(MODULE, runtime.settings.analytics.interval, tick)

    if runtime.settings.analytics.baseline.auto_after is not None:

        async def first(now: float) -> None:
            await asyncio.to_thread(first_baseline_sync, runtime, now)

        runtime.engine.add(FIRST_BASELINE, FIRST_BASELINE_EVERY, first)


def first_baseline_sync(runtime: Runtime, now: float) -> dict[str, Any] | None:
    """Capture the first performance baseline once the system has been healthy long enough."""
    with runtime.store.begin() as conn:
        made = first_baseline.capture_first(conn, now, runtime.settings.analytics.baseline)
    if made is not None:
        log.info("captured the first performance baseline: %s", made["name"])
    return made


def tick_sync(runtime: Runtime, now: float) -> dict[str, Any]:
    report = service.run_engine_once(runtime.store, runtime.settings, now)
    for outcome in report["outcomes"]:
        if outcome["action"] in ("opened", "resolved"):
            log.info("analytics alert %s %s", outcome["fingerprint"], outcome["action"])
    return report
