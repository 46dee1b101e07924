"""Engine wiring: the `statuspage` module drafts notices at the 4-hour step and at resolution,
and reminds the commander when a public update is due."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from nachtwacht.statuspage import notices

if TYPE_CHECKING:
    from nachtwacht.engine.runtime import Runtime


def install(runtime: Runtime) -> None:
    if not runtime.settings.status_page.enabled:
        return

    async def tick(now: float) -> None:
        def work() -> int:
            with runtime.store.begin() as conn:
                return notices.tick(conn, runtime.settings, now)

        if await asyncio.to_thread(work):
            runtime.wake_outbox()

    runtime.engine.add("statuspage", runtime.settings.status_page.check_every, tick)
