"""Engine wiring: `install(runtime)` adds this package's modules and spool handlers."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING

from nachtwacht.errors import alerting, service

if TYPE_CHECKING:
    from nachtwacht.engine.runtime import Runtime

log = logging.getLogger(__name__)
RETENTION_INTERVAL = 600.0
ALERT_INTERVAL = 2.0  # new issues and regressions alert within this of their commit


def install(runtime: Runtime) -> None:
    settings = runtime.settings
    runtime.drainer.register(
        "error_event",
        functools.partial(
            service.store_events, stored_limit=settings.errors.max_stored_event_bytes
        ),
    )
    # hourly counts outlive events: trends and analytics read them long after the events go
    keep_hours = max(settings.errors.retention, settings.retention.hour)

    async def retention(now: float) -> None:
        removed = await asyncio.to_thread(
            service.apply_retention, runtime.store, now, settings.errors.retention, keep_hours
        )
        if removed:
            log.info("error events: %d older than the retention deleted", removed)

    runtime.engine.add("error_retention", RETENTION_INTERVAL, retention)

    async def alerts(now: float) -> None:
        done = await asyncio.to_thread(alerting.handle_due, runtime.store, settings, now)
        if done.queued:
            runtime.wake_outbox()
        if done.opened:
            log.info("error issues: %d alerts raised", done.opened)

    runtime.engine.add("error_alerts", ALERT_INTERVAL, alerts)
    if settings.errors.frappe_error_logs or settings.errors.frappe_monitor_logs:
        # imported only when configured: the adapters' modules are their own package's concern
        from nachtwacht.errors.frappe import engine as frappe_engine

        frappe_engine.install(runtime)
