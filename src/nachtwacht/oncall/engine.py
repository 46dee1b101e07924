"""Engine wiring: the `reverify` module sends a new confirm link to each contact channel whose
confirmation went stale (`people.verification.every`), once per period."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from nachtwacht.oncall import verify

if TYPE_CHECKING:
    from nachtwacht.engine.runtime import Runtime

CHECK_EVERY = 3600.0


def install(runtime: Runtime) -> None:
    if not runtime.settings.people.verification.auto or not runtime.settings.people.contacts:
        return

    async def tick(now: float) -> None:
        def work() -> int:
            with runtime.store.begin() as conn:
                return len(verify.reverify(conn, runtime.settings, now))

        if await asyncio.to_thread(work):
            runtime.wake_outbox()

    runtime.engine.add("reverify", CHECK_EVERY, tick)
