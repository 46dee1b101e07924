"""Engine wiring: the `reviews` module sends the review-deadline and follow-up reminders."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from nachtwacht.reviews import reminders

if TYPE_CHECKING:
    from nachtwacht.engine.runtime import Runtime


def install(runtime: Runtime) -> None:
    async def tick(now: float) -> None:
        def work() -> int:
            with runtime.store.begin() as conn:
                return reminders.tick(conn, runtime.settings, now)

        if await asyncio.to_thread(work):
            runtime.wake_outbox()

    runtime.engine.add("reviews", runtime.settings.reviews.check_every, tick)
