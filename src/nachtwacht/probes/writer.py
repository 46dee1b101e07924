"""Buffer results and state in memory; write them in one transaction per flush."""

from __future__ import annotations

import asyncio
import logging

from nachtwacht.probes import service
from nachtwacht.probes.service import ResultRow
from nachtwacht.probes.state import ProbeState, Transition
from nachtwacht.store.db import Store

log = logging.getLogger(__name__)


class ResultWriter:
    name = "writer"

    def __init__(self, store: Store, max_buffer: int = 200_000) -> None:
        self.store = store
        self.max_buffer = max_buffer
        self._results: list[ResultRow] = []
        self._transitions: list[tuple[int, Transition, ResultRow]] = []
        self._states: dict[int, ProbeState] = {}
        self.written = 0
        self.dropped = 0

    def add(self, row: ResultRow, state: ProbeState, transition: Transition | None) -> None:
        # While the store is down results wait here; past max_buffer the oldest raw results
        # go (state changes and current state are never dropped).
        self._results.append(row)
        if len(self._results) > self.max_buffer:
            overflow = len(self._results) - self.max_buffer
            del self._results[:overflow]
            self.dropped += overflow
        if transition is not None:
            self._transitions.append((row.probe_id, transition, row))
        self._states[row.probe_id] = state

    @property
    def pending(self) -> int:
        return len(self._results)

    def _take(self) -> tuple[list, list, dict[int, ProbeState]]:
        batch = (self._results, self._transitions, {p: _copy(s) for p, s in self._states.items()})
        self._results, self._transitions, self._states = [], [], {}
        return batch

    def _put_back(self, batch: tuple[list, list, dict[int, ProbeState]]) -> None:
        # in front, so nothing accepted is lost on a store hiccup and order is kept
        results, transitions, states = batch
        self._results[:0] = results
        self._transitions[:0] = transitions
        for pid, s in states.items():
            self._states.setdefault(pid, s)

    def _write(self, batch: tuple[list, list, dict[int, ProbeState]]) -> int:
        results, transitions, states = batch
        with self.store.begin() as conn:
            service.write_batch(conn, results, transitions, states)
        return len(results)

    def flush_sync(self) -> int:
        """Flush from the thread that owns the buffers (tests, shutdown)."""
        batch = self._take()
        try:
            written = self._write(batch)
        except Exception:
            self._put_back(batch)
            raise
        self.written += written
        return written

    async def tick(self, now: float) -> None:
        if not (self._results or self._transitions or self._states):
            return
        batch = self._take()  # swapped on the event loop, written in a worker thread
        try:
            written = await asyncio.to_thread(self._write, batch)
        except BaseException:
            self._put_back(batch)
            raise
        self.written += written


def _copy(state: ProbeState) -> ProbeState:
    return ProbeState(
        state.state,
        state.since,
        state.failures,
        state.first_failure,
        state.last_check,
        state.last_status,
        state.last_value,
        state.last_latency_ms,
        state.last_message,
    )
