"""The engine module that keeps this process a member: heartbeat, fencing, probe ownership.

In a running `serve` the heartbeat has a thread of its own (`start`), so a busy event loop
cannot make a healthy member miss its bound; tests without it beat from the tick. Every
`TICK` seconds the engine module then acts on what is known:

- a heartbeat that failed or still hangs counts against us; past `FENCE_AFTER` we own no
  probes and the outbox sender stops claiming (`Membership.active`), and /healthz says so;
- when the set of live checking members changed, the probes are divided again
  (`ownership.owned_by`), in each scheduler it was given: the plain probes' and the `here`
  one's (probes with `locations:` that name the server's location). The ones we gain start
  from their committed state (`service.load_states`, or the state at this location:
  `locations.states_at`), the ones we lose leave our scheduler.

The tick never raises for a store that is down: the engine's back-off would slow the
heartbeat that must say "back" as soon as the store answers. The trouble is in /healthz.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence

from sqlalchemy import Connection

from nachtwacht.clock import Clock
from nachtwacht.engine.members import Membership
from nachtwacht.engine.ownership import owned_by
from nachtwacht.probes.scheduler import Scheduler
from nachtwacht.probes.state import ProbeState
from nachtwacht.store.db import Store

log = logging.getLogger(__name__)

TICK = 0.5
LOOP_STALL = 30.0  # the event loop silent this long: the process is wedged, stop beating

# the committed state of the probes a scheduler adopts, read in one connection
StateLoader = Callable[[Connection, list[int]], Mapping[int, ProbeState]]


class MemberTicker:
    def __init__(
        self,
        membership: Membership,
        schedulers: Sequence[tuple[Scheduler, StateLoader]],
        store: Store,
        clock: Clock,
        on_active: Callable[[bool], None] | None = None,
    ) -> None:
        self.membership = membership
        # each scheduler's probes are divided over the same members; their ids are disjoint
        # (a probe is plain or located), so one hash key space serves them all
        self.schedulers = list(schedulers)
        self.store = store
        self.clock = clock
        self.on_active = on_active
        self._beat: asyncio.Future[list[str]] | None = None
        self._last_beat: float | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._beat_started: float | None = None  # the thread's beat in progress since
        self._loop_seen = clock.now()
        self._checkers: frozenset[str] | None = None
        self.rebalanced = 0  # times the probes were divided again

    # -- the heartbeat thread (a running serve) ----------------------------------------------

    def start(self) -> None:
        """Beat from a thread of its own, whatever the event loop is doing.

        At 50,000 probes the loop is busy for seconds at a time (the first checks, adopting
        25,000 probes): a heartbeat started from it came late enough to get a healthy member
        declared dead, again and again. The thread still stops beating once the loop has not
        ticked for `LOOP_STALL`, so a wedged process is taken over all the same.
        """
        self._loop_seen = self.clock.now()
        self._thread = threading.Thread(target=self._beat_forever, name="heartbeat", daemon=True)
        self._thread.start()

    def _beat_forever(self) -> None:
        m = self.membership
        while not self._stop.is_set():
            now = self.clock.now()
            if now - self._loop_seen > LOOP_STALL:
                m.fence(now, f"the event loop has not run for {now - self._loop_seen:.0f} s")
            else:
                self._beat_started = now
                try:
                    m.beat_once(now)
                except Exception as exc:
                    m.fence(self.clock.now(), f"{exc.__class__.__name__}: {exc}"[:300])
                finally:
                    self._beat_started = None
            self._stop.wait(m.heartbeat)

    # -- the engine module ------------------------------------------------------------------

    async def tick(self, now: float) -> None:
        m = self.membership
        self._loop_seen = now
        if self._thread is not None:
            started = self._beat_started
            if started is not None and self.clock.now() - started > m.heartbeat:
                m.fence(self.clock.now(), "the heartbeat write hangs")
            await self.apply(self.clock.now())
            return
        # no thread (tests drive the ticks with a fake clock): beat from here
        beat = self._beat
        if beat is None and (self._last_beat is None or now - self._last_beat >= m.heartbeat):
            self._last_beat = now
            beat = self._beat = asyncio.ensure_future(asyncio.to_thread(m.beat_once, now))
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
        retry = False
        added_n = removed_n = 0
        for scheduler, load in self.schedulers:
            # ~0.3 s at 50,000 probes: off the event loop, whose checks would start late
            mine = await asyncio.to_thread(owned_by, m.me, checkers, list(scheduler.configs))
            gained = [pid for pid in mine if pid not in scheduler.slots]
            states: Mapping[int, ProbeState] = {}
            if gained:
                try:
                    states = await asyncio.to_thread(self._load, load, gained)
                except Exception as exc:
                    # without their committed state we would restart them at NEW: wait
                    log.warning("cannot load the state of %d adopted probes: %s", len(gained), exc)
                    mine -= set(gained)
                    retry = True  # try again at the next tick
            added, removed = scheduler.set_owned(mine, states)
            added_n += len(added)
            removed_n += len(removed)
        owned = sum(len(s.slots) for s, _ in self.schedulers)
        m.probes_owned = owned
        self._checkers = None if retry or not checkers else checkers
        self.rebalanced += 1
        if added_n or removed_n:
            log.info(
                "members %s: checking %d probes (+%d, -%d)",
                ", ".join(sorted(checkers)) or "(none)",
                owned,
                added_n,
                removed_n,
            )

    def _load(self, load: StateLoader, ids: list[int]) -> Mapping[int, ProbeState]:
        with self.store.connect() as conn:
            return load(conn, ids)

    async def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30.0)
        if self._beat is not None:
            with contextlib.suppress(Exception):
                await self._beat
