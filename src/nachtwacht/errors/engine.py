"""Engine wiring: `install(runtime)` adds this package's modules and spool handlers."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING

from nachtwacht.errors import service

if TYPE_CHECKING:
    from nachtwacht.engine.runtime import Runtime

log = logging.getLogger(__name__)
RETENTION_INTERVAL = 600.0


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
    if settings.errors.frappe_error_logs or settings.errors.frappe_monitor_logs:
        # imported only when configured: the adapters' modules are their own package's concern
        from nachtwacht.errors.frappe import engine as frappe_engine

        frappe_engine.install(runtime)
