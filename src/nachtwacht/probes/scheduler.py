"""The probe scheduler: every probe on its interval, with jitter, under bounded concurrency.

A heap of due times keeps the cost per check constant whatever the number of probes. Checks
keep their cadence (next due = previous due + interval) so that lag never accumulates, and a
probe is never run twice at once.

With several processes on one store (docs/decisions/0024) each scheduler holds only the probes
its process owns (`owned`); `set_owned` moves probes in and out as members come and go. An
adopted probe continues the state its previous owner committed, and keeps its cadence.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from nachtwacht.clock import Clock
from nachtwacht.meter import Histograms, Tally
from nachtwacht.probes import registry, service
from nachtwacht.probes.base import Probe, ProbeConfig
from nachtwacht.probes.context import ProbeContext
from nachtwacht.probes.results import CheckResult, State
from nachtwacht.probes.service import ResultRow
from nachtwacht.probes.state import ProbeState, Transition, apply

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ProbeSlot:
    """One enabled probe in the scheduler: its config, its live probe, its state and when it
    is next due. (The process as a whole is the engine's `Runtime`.)"""

    probe_id: int
    config: ProbeConfig
    probe: Probe
    state: ProbeState
    due: float = 0.0
    running: bool = False
    checks: int = 0


@dataclass
class SchedulerStats:
    """What the checks did, for /metrics and the benchmarks.

    Durations are kept per probe kind, not per probe: a histogram is 13 series, and 10,000
    probes would make 130,000 of them, more than the rest of a Prometheus server's targets
    together. Per probe there are the last latency and the check count (web/metrics.py);
    which probe of a slow kind is slow is a `topk()` over those.
    """

    checks: int = 0
    lags_ms: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))
    # seconds a check took, by probe kind: the probe's own latency when it measured one,
    # else the scheduler's clock around the check (a wait for a concurrency slot included)
    durations: Histograms = field(default_factory=Histograms)
    # checks by (probe kind, result status: ok | warning | critical | unknown)
    results: Tally = field(default_factory=Tally)


Listener = Callable[[ProbeSlot, CheckResult, Transition | None], None]


class Sink(Protocol):
    """Where results go: the `ResultWriter` on the server; for probes with `locations:` the
    server's `LocationSink`, and in an agent its spool (decision 25)."""

    def add(self, row: ResultRow, state: ProbeState, transition: Transition | None) -> None: ...


class Scheduler:
    name = "scheduler"

    def __init__(
        self,
        configs: Sequence[ProbeConfig],
        ids: dict[str, int],
        states: dict[int, ProbeState],
        ctx: ProbeContext,
        writer: Sink,
        clock: Clock,
        max_concurrency: int = 1000,
        startup_spread: float = 25.0,
        rng: random.Random | None = None,
        batch_window: float = 0.025,
        owned: Collection[int] | None = None,
        adopt_spread: float = 2.0,
    ) -> None:
        self.clock = clock
        self.batch_window = batch_window
        self.ctx = ctx
        self.writer = writer
        self.stats = SchedulerStats()
        self.listeners: list[Listener] = []
        self._sem = asyncio.Semaphore(max_concurrency)
        self._heap: list[tuple[float, int]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiter: asyncio.Future[None] | None = None
        self.rng = rng = rng or random.Random()
        self.adopt_spread = adopt_spread
        now = clock.now()
        # every enabled probe of the config, owned here or not (the alert worker needs them all)
        self.configs: dict[int, ProbeConfig] = {}
        self.slots: dict[int, ProbeSlot] = {}
        self.by_name: dict[str, ProbeSlot] = {}
        for cfg in configs:
            if not cfg.enabled:
                continue
            pid = ids[cfg.name]
            self.configs[pid] = cfg
            if owned is not None and pid not in owned:
                continue
            state = states.get(pid) or ProbeState(since=now)
            # spread the first checks so a restart does not fire every probe at once, yet
            # every probe runs within `startup_spread` of start
            self._add(pid, state, now + rng.uniform(0, min(cfg.interval, startup_spread)))

    def _add(self, pid: int, state: ProbeState, due: float) -> ProbeSlot:
        cfg = self.configs[pid]
        slot = ProbeSlot(pid, cfg, registry.build(cfg, self.ctx), state, due=due)
        self.slots[pid] = slot
        self.by_name[cfg.name] = slot
        heapq.heappush(self._heap, (due, pid))
        return slot

    # -- ownership (several processes on one store) -----------------------------------------

    async def check_elsewhere(self, name: str) -> ProbeState | None:
        """Check an enabled probe another member owns once, now, without recording it.

        Returns its committed state with this result folded in (None: no such probe). The
        owner goes on checking it on its cadence; writing here would be a second owner.
        """
        pid = next((p for p, cfg in self.configs.items() if cfg.name == name), None)
        if pid is None:
            return None
        cfg = self.configs[pid]
        probe = registry.build(cfg, self.ctx)
        try:
            async with self._sem:
                result = await probe.run()
        finally:
            await probe.close()
        states = await asyncio.to_thread(self._committed, pid)
        state = _copy_state(states.get(pid) or ProbeState(since=self.clock.now()))
        apply(state, result, self.clock.now(), cfg.retries)
        return state

    def _committed(self, pid: int) -> dict[int, ProbeState]:
        if self.ctx.store is None:
            return {}
        with self.ctx.store.connect() as conn:
            return service.load_states(conn, [pid])

    def set_owned(
        self, owned: Collection[int], states: Mapping[int, ProbeState]
    ) -> tuple[list[int], list[int]]:
        """Check exactly the probes in `owned` from now on; return (added, removed) ids.

        `states` holds the committed state of (at least) the added probes: an adopted probe
        goes on from where its previous owner left it, so an outage in progress is neither
        hidden (back to NEW) nor confirmed twice. Its next check keeps the previous owner's
        cadence, but comes within `adopt_spread` seconds when that cadence is overdue or far.
        A removed probe's check in flight still completes and is written.
        """
        wanted = {pid for pid in owned if pid in self.configs}
        removed = [pid for pid in self.slots if pid not in wanted]
        for pid in removed:
            slot = self.slots.pop(pid)
            self.by_name.pop(slot.config.name, None)
            # its heap entry is skipped as stale; its client closes in the background
            task = asyncio.get_running_loop().create_task(_close(slot))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        now = self.clock.now()
        added = sorted(pid for pid in wanted if pid not in self.slots)
        for pid in added:
            cfg = self.configs[pid]
            state = states.get(pid) or ProbeState(since=now)
            latest = now + self.rng.uniform(0, min(cfg.interval, self.adopt_spread))
            cadence = state.last_check + cfg.interval if state.last_check is not None else now
            self._add(pid, _copy_state(state), min(max(now, cadence), latest))
        if added:
            self.wake()
        return added, removed

    # -- one step, usable from tests with a fake clock -------------------------------------

    def launch_due(self, horizon: float = 0.0) -> float:
        """Start every check due by now (+ `horizon`); return seconds until the next one is due."""
        now = self.clock.now()
        limit = now + horizon
        heap = self._heap
        slots = self.slots
        tasks = self._tasks
        create_task = asyncio.get_running_loop().create_task
        while heap and heap[0][0] <= limit:
            due, pid = heapq.heappop(heap)
            slot = slots.get(pid)
            if slot is None or slot.due != due:
                continue  # stale entry (the probe was rescheduled or removed)
            slot.running = True
            task = create_task(self._run(slot, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return (heap[0][0] - now) if heap else 1.0

    async def run_due(self) -> None:
        """Run every due check to completion (tests drive the scheduler with this)."""
        self.launch_due()
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    async def run_now(self, names: Sequence[str] | None = None) -> None:
        """Check the named probes (or all) immediately, outside their schedule."""
        wanted = [self.by_name[n] for n in names] if names else list(self.slots.values())
        now = self.clock.now()
        for slot in wanted:
            slot.due = now
            heapq.heappush(self._heap, (now, slot.probe_id))
        await self.run_due()

    async def loop(self, stop: asyncio.Event) -> None:
        # Checks start in batches: a wake-up also starts every check due within the next
        # `batch_window` (25 ms), so at 333 checks/s the loop wakes ~40 times a second rather
        # than once per check, and requests go out (and answers come back) together. On the
        # 2-core VM of docs/performance.md a wake-up from idle costs 60-140 us of CPU, as much
        # as the HTTP request itself; batching cut wake-ups 4x and system CPU by half. No check
        # starts later for it, at most `batch_window` earlier (cadence stays due + interval).
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            wait = self.launch_due(self.batch_window)
            # a plain future and timer handle: cheaper than wait_for(), which makes a task
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(max(0.005, min(wait, 0.5)), _wake_up, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None

    def wake(self) -> None:
        """Re-examine the schedule now (after probes were added or rescheduled from outside)."""
        _wake_up(self._waiter)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.drain()
        for slot in self.slots.values():
            try:
                await slot.probe.close()
            except Exception:  # closing is best effort
                log.exception("closing probe %s", slot.config.name)

    # -- one check ---------------------------------------------------------------------------

    async def _run(self, slot: ProbeSlot, due: float) -> None:
        start = self.clock.now()
        try:
            async with self._sem:
                result = await slot.probe.run()
        finally:
            slot.running = False
        now = self.clock.now()
        lag_ms = max(0.0, (start - due) * 1000)
        stats = self.stats
        stats.checks += 1
        stats.lags_ms.append(lag_ms)
        slot.checks += 1
        kind = slot.config.kind
        latency = result.latency_ms
        stats.durations.observe(kind, now - start if latency is None else latency / 1000)
        stats.results.add((kind, result.status.label))
        transition = apply(slot.state, result, now, slot.config.retries)
        row = ResultRow(
            slot.probe_id,
            now,
            int(result.status),
            result.value,
            result.latency_ms,
            lag_ms,
            result.message,
        )
        self.writer.add(row, slot.state, transition)
        for listener in self.listeners:
            try:
                listener(slot, result, transition)
            except Exception:
                log.exception("result listener failed")
        cfg = slot.config
        step = cfg.effective_retry_interval if slot.state.state is State.PENDING else cfg.interval
        following = due + step
        if following <= now:  # the check overran its slot: skip ahead, never pile up
            following = (
                now + step if step < cfg.interval else due + step * (int((now - due) // step) + 1)
            )
        slot.due = following
        heapq.heappush(self._heap, (following, slot.probe_id))


async def _close(slot: ProbeSlot) -> None:
    try:
        await slot.probe.close()
    except Exception:  # closing is best effort
        log.exception("closing probe %s", slot.config.name)


def _copy_state(state: ProbeState) -> ProbeState:
    return ProbeState(*(getattr(state, f) for f in ProbeState.__slots__))


def _wake_up(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
