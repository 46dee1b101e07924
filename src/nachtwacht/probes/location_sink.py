"""Where the server's scheduler puts results of probes with `locations:` (decision 25).

The server is one of those locations (`server.location`); its results are combined with the
agents' through `probes.locations.ingest`, like theirs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from nachtwacht.clock import Clock
from nachtwacht.probes import rollups
from nachtwacht.probes.base import ProbeConfig
from nachtwacht.probes.locations import Observation, ingest
from nachtwacht.probes.service import ResultRow
from nachtwacht.probes.state import ProbeState, Transition
from nachtwacht.store.db import Store

log = logging.getLogger(__name__)


class LocationSink:
    """Where the server's scheduler puts results of probes with `locations:` (its own).

    The scheduler calls `add` as it calls the result writer's; `flush` stores what is buffered
    through `ingest`, one transaction per probe, so they are combined with the agents' results.
    While the store is down results wait here (the oldest dropped past `max_buffer`).
    """

    def __init__(
        self,
        store: Store,
        location: str,
        configs: Mapping[int, ProbeConfig],
        clock: Clock,
        max_buffer: int = 20_000,
    ) -> None:
        self.clock = clock
        self.store = store
        self.location = location
        self.configs = dict(configs)
        self.max_buffer = max_buffer
        self._buffer: list[tuple[int, Observation]] = []
        self._lock = asyncio.Lock()
        self.on_commit: list[Callable[[], None]] = []
        self.written = 0
        self.dropped = 0
        self._soon: asyncio.Task[None] | None = None

    def add(self, row: ResultRow, state: ProbeState, transition: Transition | None) -> None:
        ob = Observation(
            row.ts, row.status, row.value, row.latency_ms, row.lag_ms, row.message, None
        )
        self._buffer.append((row.probe_id, ob))
        if len(self._buffer) > self.max_buffer:
            over = len(self._buffer) - self.max_buffer
            del self._buffer[:over]
            self.dropped += over
        if transition is not None and (self._soon is None or self._soon.done()):
            # a location changed state: combine now, not at the next tick
            self._soon = asyncio.get_running_loop().create_task(self._flush_quietly())

    async def _flush_quietly(self) -> None:
        try:
            await self.flush()
        except Exception:
            log.exception("storing this location's results failed; retrying at the next tick")

    async def tick(self, now: float) -> None:
        await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            if not self._buffer:
                return
            batch, self._buffer = self._buffer, []
            try:
                changed, rest = await asyncio.to_thread(self._write, batch)
            except BaseException:
                self._buffer[:0] = batch
                raise
            self._buffer[:0] = rest  # what did not commit, in order, in front
        if changed:
            for hook in self.on_commit:
                hook()

    def _write(
        self, batch: list[tuple[int, Observation]]
    ) -> tuple[bool, list[tuple[int, Observation]]]:
        """Store per probe; return (a combined state changed, what did not commit)."""
        by_probe: dict[int, list[Observation]] = {}
        for pid, ob in batch:
            by_probe.setdefault(pid, []).append(ob)
        items = list(by_probe.items())
        changed = False
        for index, (pid, obs) in enumerate(items):
            cfg = self.configs.get(pid)
            if cfg is None:
                continue
            try:
                late = rollups.late_after(self.clock.now())
                with self.store.begin() as conn:
                    changed |= bool(ingest(conn, pid, cfg, self.location, obs, late_after=late))
            except Exception:
                log.exception("storing results of probe %d at %s failed", pid, self.location)
                return changed, [(p, o) for p, rest in items[index:] for o in rest]
            self.written += len(obs)
        return changed, []
