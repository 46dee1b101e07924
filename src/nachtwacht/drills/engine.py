"""Engine wiring: the `drills` module ends drills whose incident resolved (or that ran past
`drills.max_duration`), and sends the schedule's reminders."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from nachtwacht.drills import schedule, service

if TYPE_CHECKING:
    from nachtwacht.engine.runtime import Runtime


def install(runtime: Runtime) -> None:
    async def tick(now: float) -> None:
        def work() -> int:
            with runtime.store.begin() as conn:
                ended = service.end_due(conn, runtime.settings, now)
            with runtime.store.begin() as conn:
                return schedule.reminders(conn, runtime.settings, now) + len(ended)

        if await asyncio.to_thread(work):
            runtime.wake_outbox()

    runtime.engine.add("drills", runtime.settings.drills.check_every, tick)
