"""Engine wiring: the `security` module polls `security.sources` every `security.interval`.

Only with sources configured. A source that cannot be read (missing, unreadable) shows in
the module's health (/healthz, `nachtwacht status`) after the others have been read and their
findings recorded.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from nachtwacht.security.watch import Watch

if TYPE_CHECKING:
    from nachtwacht.engine.runtime import Runtime

MODULE = "security"


class SecurityLogError(Exception):
    """A source cannot be read."""


def install(runtime: Runtime) -> None:
    cfg = runtime.settings.security
    if not cfg.sources or MODULE in runtime.engine.modules:
        return
    watch = Watch(runtime.store, runtime.settings, runtime.clock, cfg.sources)

    async def tick(now: float) -> None:
        polled = await asyncio.to_thread(watch.poll)
        if polled.queued:
            runtime.wake_outbox()
        if polled.errors:
            raise SecurityLogError("; ".join(polled.errors))

    runtime.engine.add(MODULE, cfg.interval, tick)
