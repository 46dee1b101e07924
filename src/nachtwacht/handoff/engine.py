"""Engine wiring: the `handoff` module summarises each handoff for the incoming engineer."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from nachtwacht.handoff import service

if TYPE_CHECKING:
    from nachtwacht.engine.runtime import Runtime

CHECK_EVERY = 60.0


def install(runtime: Runtime) -> None:
    if not runtime.settings.people.rotations:
        return

    async def tick(now: float) -> None:
        def work() -> int:
            with runtime.store.begin() as conn:
                return service.tick(conn, runtime.settings, now)

        if await asyncio.to_thread(work):
            runtime.wake_outbox()

    runtime.engine.add("handoff", CHECK_EVERY, tick)
