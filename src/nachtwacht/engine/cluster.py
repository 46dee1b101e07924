"""The engine module that keeps this process a member: heartbeat, fencing, probe ownership.

Every `TICK` seconds: start a heartbeat when one is due (in a worker thread, never more than
one at a time), wait for it at most one heartbeat, and then act on what is known:

- a heartbeat that failed or still hangs counts against us; past `FENCE_AFTER` we own no
  probes and the outbox sender stops claiming (`Membership.active`), and /healthz says so;
- when the set of live checking members changed, the probes are divided again
  (`ownership.owned_by`): the ones we gain start from their committed state
  (`service.load_states`), the ones we lose leave our scheduler.

The tick never raises for a store that is down: the engine's back-off would slow the
heartbeat that must say "back" as soon as the store answers. The trouble is in /healthz.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from nachtwacht.clock import Clock
from nachtwacht.engine.members import Membership
from nachtwacht.engine.ownership import owned_by
from nachtwacht.probes import service
from nachtwacht.probes.scheduler import Scheduler
from nachtwacht.store.db import Store

log = logging.getLogger(__name__)

TICK = 0.5


class MemberTicker:
    def __init__(
        self,
        membership: Membership,
        scheduler: Scheduler,
        store: Store,
        clock: Clock,
        on_active: Callable[[bool], None] | None = None,
    ) -> None:
        self.membership = membership
        self.scheduler = scheduler
        self.store = store
        self.clock = clock
        self.on_active = on_active
        self._beat: asyncio.Future[list[str]] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heartbeat")
        self._beat_started: float | None = None
        self._checkers: frozenset[str] | None = None
        self.rebalanced = 0  # times the probes were divided again

    async def tick(self, now: float) -> None:
        m = self.membership
        beat = self._beat
        if beat is None and (self._beat_started is None or now - self._beat_started >= m.heartbeat):
            self._beat_started = now
            # a thread of its own: behind the writer's flushes in the shared pool, a heartbeat
            # waited long enough under load (10,000 probes) to fence a healthy member
            loop = asyncio.get_running_loop()
            beat = self._beat = loop.run_in_executor(self._pool, m.beat_once, now)
        if beat is not None:
            await asyncio.wait({beat}, timeout=m.heartbeat)  # its outcome is read below
            if beat.done():
                self._beat = None
                exc = beat.exception()
                if exc is not None:
                    m.fence(self.clock.now(), f"{exc.__class__.__name__}: {exc}"[:300])
            else:
                m.fence(self.clock.now(), "the heartbeat write hangs")
        await self.apply(self.clock.now())

    async def apply(self, now: float) -> None:
        """Own exactly the probes the live members' division gives us."""
        m = self.membership
        active = m.active(now)
        if self.on_active is not None:
            self.on_active(active)
        checkers = frozenset(m.checkers(now))
        if checkers == self._checkers:
            return
        scheduler = self.scheduler
        # ~0.3 s at 50,000 probes: off the event loop, whose checks would start late
        mine = await asyncio.to_thread(owned_by, m.me, checkers, list(scheduler.configs))
        gained = [pid for pid in mine if pid not in scheduler.slots]
        states = {}
        if gained:
            try:
                states = await asyncio.to_thread(self._load, gained)
            except Exception as exc:
                # without their committed state we would restart them at NEW: wait
                log.warning("cannot load the state of %d adopted probes: %s", len(gained), exc)
                mine -= set(gained)
                checkers = frozenset()  # try again at the next tick
        added, removed = scheduler.set_owned(mine, states)
        m.probes_owned = len(scheduler.slots)
        self._checkers = checkers or None
        self.rebalanced += 1
        if added or removed:
            log.info(
                "members %s: checking %d probes (+%d, -%d)",
                ", ".join(sorted(checkers)) or "(none)",
                len(scheduler.slots),
                len(added),
                len(removed),
            )

    def _load(self, ids: list[int]) -> dict:
        with self.store.connect() as conn:
            return service.load_states(conn, ids)

    async def close(self) -> None:
        if self._beat is not None:
            with contextlib.suppress(Exception):
                await self._beat
        self._pool.shutdown(wait=False)
