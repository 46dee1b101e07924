"""Buffer results and state in memory; write them in one transaction per flush.

When the store is down a flush goes to the durable spool instead (kind "results", see
`probes.spooled`), so a kill -9 during an outage loses no results and memory stays bounded;
the drainer writes them later with the same `write_batch`. Once one flush is in the spool,
later flushes follow it there until it is stored, so a probe's state never goes backwards.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from nachtwacht.probes import service, spooled
from nachtwacht.probes.service import ResultRow
from nachtwacht.probes.state import ProbeState, Transition
from nachtwacht.spool.drain import store_unavailable
from nachtwacht.spool.log import SpoolError
from nachtwacht.store.db import Store

if TYPE_CHECKING:
    from nachtwacht.spool.drain import Drainer

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
        self.spilled = 0  # results handed to the spool because the store was down
        self.drainer: Drainer | None = None  # set by `attach`: without it there is no spool
        # called after a commit that stored state changes (their flips): the alert worker
        self.on_commit: list[Callable[[], None]] = []
        # one flush at a time: two in flight could commit an older state over a newer one
        self._lock = asyncio.Lock()
        self._urgent: asyncio.Task[None] | None = None
        self._again = False
        # flushes taken on the event loop and still writing in a worker thread: `flush_sync`
        # waits for them, so it never commits a newer state before an older one
        self._idle = threading.Condition()
        self._inflight = 0

    def attach(self, drainer: Drainer) -> None:
        """Spill flushes the store cannot take into `drainer`'s spool."""
        self.drainer = drainer

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

    def _write(self, batch: tuple[list, list, dict[int, ProbeState]], attempt: _Attempt) -> int:
        results, transitions, states = batch
        with self.store.begin() as conn:
            service.write_batch(conn, results, transitions, states)
            attempt.committing = True  # past here a failure may still have committed
        return len(results)

    def _spill(self, batch: spooled.Batch, maybe: bool) -> None:
        """Append the flush to the spool (fsync'd); SpoolError leaves it to the caller."""
        assert self.drainer is not None
        self.drainer.spool.append_many([(spooled.KIND, p) for p in spooled.encode(batch, maybe)])
        self.spilled += len(batch[0])
        self.drainer.wake()

    def _spooling(self) -> bool:
        return self.drainer is not None and self.drainer.pending(spooled.KIND)

    def _flush(self, batch: spooled.Batch) -> int:
        """Write or spill one flush (in a worker thread); on failure the caller puts it back."""
        if self._spooling():
            self._spill(batch, maybe=False)
            return 0
        attempt = _Attempt()
        try:
            return self._write(batch, attempt)
        except Exception as exc:
            if self.drainer is None or not store_unavailable(exc):
                raise
            self.drainer.note_unavailable(exc)
            try:
                self._spill(batch, maybe=attempt.committing)
            except SpoolError as full:
                log.error("store down and the spool refuses results: %s", full)
                raise exc from full
            return 0

    def flush_sync(self) -> int:
        """Flush from the thread that owns the buffers (tests, shutdown)."""
        batch = self._take()
        self._wait_idle()
        try:
            written = self._flush(batch)
        except Exception:
            self._put_back(batch)
            raise
        self.written += written
        if batch[1] and written:
            self._committed()
        return written

    async def tick(self, now: float) -> None:
        await self.flush()

    async def flush(self) -> None:
        """Write what is buffered now (serialised with every other flush of this writer)."""
        async with self._lock:
            if not (self._results or self._transitions or self._states):
                return
            batch = self._take()  # swapped on the event loop, written in a worker thread
            with self._idle:
                self._inflight += 1
            writing = asyncio.ensure_future(asyncio.to_thread(self._flush_tracked, batch))
            try:
                written = await asyncio.shield(writing)
            except asyncio.CancelledError:
                # the thread goes on writing whatever we do: wait for its outcome, so the
                # batch is neither lost nor written a second time by the next flush
                try:
                    written = await writing
                except Exception:
                    self._put_back(batch)
                    raise
                self._done(batch, written)
                raise
            except BaseException:
                self._put_back(batch)
                raise
            self._done(batch, written)

    def _done(self, batch: spooled.Batch, written: int) -> None:
        self.written += written
        if batch[1] and written:
            self._committed()

    def _flush_tracked(self, batch: spooled.Batch) -> int:
        try:
            return self._flush(batch)
        finally:
            with self._idle:
                self._inflight -= 1
                self._idle.notify_all()

    def _wait_idle(self, timeout: float = 30.0) -> None:
        with self._idle:
            if not self._idle.wait_for(lambda: self._inflight <= 0, timeout):
                log.error("a flush is still writing after %.0f s; flushing anyway", timeout)

    def flush_soon(self) -> None:
        """A state change is buffered: write it now rather than at the next tick.

        The alert it may mean is raised from the committed flip, so the page waits for this
        commit; without it a confirmed failure would wait up to `flush_interval`.
        """
        self._again = True  # an urgent flush already writing took its batch before this one
        if self._urgent is not None and not self._urgent.done():
            return
        self._urgent = asyncio.get_running_loop().create_task(self._flush_urgently())

    async def _flush_urgently(self) -> None:
        while self._again:
            self._again = False
            try:
                await self.flush()
            except Exception:
                # the batch is back in the buffer; the writer's tick retries and reports it
                log.exception("urgent flush of a state change failed")
                return

    def _committed(self) -> None:
        for hook in self.on_commit:
            try:
                hook()
            except Exception:
                log.exception("writer commit hook failed")


class _Attempt:
    committing = False


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
