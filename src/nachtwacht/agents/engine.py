"""Engine wiring for agents: the `agents` module marks agents silent past the bound."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from nachtwacht.agents import service

if TYPE_CHECKING:
    from nachtwacht.engine.runtime import Runtime

log = logging.getLogger(__name__)

INTERVAL = 5.0  # an agent's silence is raised at most this late after its bound


def check_silence(runtime: Runtime, now: float) -> int:
    """Mark every agent silent past the bound, each in its own transaction; return how many."""
    settings = runtime.settings
    with runtime.store.connect() as conn:
        due = service.silent_candidates(conn, now, settings.server.agent_silent_after)
    marked = queued = 0
    with runtime.store.begin() as conn:
        retired, queued = service.retire_revoked(conn, settings, now)
    for location in retired:
        log.warning("agent %s retired: its tokens are revoked", location)
    for location, _ in due:
        with runtime.store.begin() as conn:
            done, pages = service.mark_silent(conn, settings, location, now)
        if done:
            marked += 1
            queued += pages
            log.warning("agent %s is silent; its results count as unknown", location)
    if marked:
        runtime.alerting.wake()  # the recombined probes may have left flips
    if queued:
        runtime.wake_outbox()
    return marked


def install(runtime: Runtime) -> None:
    async def tick(now: float) -> None:
        await asyncio.to_thread(check_silence, runtime, now)

    runtime.engine.add("agents", INTERVAL, tick)
