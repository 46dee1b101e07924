"""Move spooled records into the store, in order, exactly once.

Handlers are registered per record kind: `handler(conn, payloads, now)` writes a run of
consecutive records of its kind inside the drainer's transaction, which also moves the cursor
(`spool.cursor` in engine_meta). Either both commit or neither does, so a kill -9 anywhere
replays from the last committed record and nothing is stored twice.

When the store is unavailable the drainer says so (`store_down_since`) and retries with a
growing pause; records keep arriving in the log meanwhile. While idle it still asks the store
for `SELECT 1` every `check_every` seconds, so an outage is noticed (and raised as an alarm by
the watchdog) even when nothing arrives. A record its handler rejects (a bug or bad data, not
an outage: IntegrityError, DataError, any non-database exception) goes to `dead/` with the
reason, so one bad record cannot stop the rest.

A failed commit may still have committed (the connection broke during COMMIT). So after any
failure the cursor is read from the store again before the next attempt: what did commit is
then not written a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby

from sqlalchemy import Connection, text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError

from nachtwacht.clock import Clock
from nachtwacht.meter import Tally
from nachtwacht.spool.log import Position, Record, SpoolLog
from nachtwacht.store.db import Store, StoreError
from nachtwacht.wake import Wake

log = logging.getLogger(__name__)

Handler = Callable[[Connection, list[bytes], float], object]  # what it returns is unused
CURSOR_KEY = "spool.cursor"
GATHER = 0.05  # seconds


def store_unavailable(exc: BaseException) -> bool:
    """An outage (retry later) rather than a record the handler cannot take.

    `Store` wraps every SQLAlchemy error in StoreError, so look at the cause: a constraint or
    a value the database refuses (IntegrityError, DataError) is the record's fault; anything
    else from the database (refused or broken connections, locks, a full disk, a missing
    table during a restore) is the store's, and waiting helps.
    """
    if isinstance(exc, StoreError):
        cause = exc.__cause__
        if not isinstance(cause, SQLAlchemyError):
            return True
        exc = cause
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, IntegrityError | DataError):
        return False
    return isinstance(exc, SQLAlchemyError)


@dataclass
class Drainer:
    spool: SpoolLog
    store: Store
    clock: Clock
    handlers: dict[str, Handler] = field(default_factory=dict)
    batch: int = 2000
    store_down_since: float | None = None
    last_error: str | None = None
    stored: int = 0  # records committed since start
    dead: int = 0
    # records committed since start by kind (error_event, probe_result, ...), for /metrics
    stored_kinds: Tally = field(default_factory=Tally)
    # when the drainer last stored everything the log held as it read it (a batch that was
    # not full, or nothing to read); None: not yet since the start
    caught_up_at: float | None = None
    check_every: float = 5.0  # while idle, ask the store this often whether it is there
    _committed: Position | None = None
    _loaded: bool = False  # _committed was read from the store (None there: nothing drained)
    _last_contact: float | None = None
    _wake: Wake = field(default_factory=Wake)
    listeners: list[Callable[[str, int], None]] = field(default_factory=list)

    def register(self, kind: str, handler: Handler) -> None:
        self.handlers[kind] = handler

    def wake(self) -> None:
        """New records: drain now. Safe from any thread (the result writer spills in one)."""
        self._wake.set()

    @property
    def backlog_bytes(self) -> int:
        """Bytes not yet stored (everything kept, while the cursor is not known yet)."""
        return self.spool.backlog(self._committed if self._loaded else None)

    def __post_init__(self) -> None:
        self.created_at = self.clock.now()

    def lag(self, now: float) -> float:
        """Seconds since the drainer last stored all the log held; 0 with nothing waiting.

        About the age of the oldest record waiting (an upper bound): keeping up under steady
        arrivals it stays near the GATHER pause and a transaction; falling behind, or with the
        store down, it grows until the backlog is gone."""
        if self.backlog_bytes == 0:
            return 0.0
        since = self.caught_up_at if self.caught_up_at is not None else self.created_at
        return max(0.0, now - since)

    def pending(self, kind: str) -> bool:
        """Does the log hold a record of `kind` not yet stored? Then new ones queue behind it.

        Before the cursor could be read (the store was down since the start) any record of the
        kind counts as waiting: the safe answer, since the store cannot be written then anyway.
        """
        end = self.spool.last_end(kind)
        if end is None:
            return False
        if not self._loaded or self._committed is None:
            return True
        return end > self._committed

    def note_unavailable(self, exc: BaseException) -> None:
        """Another writer (a ping, the result writer) found the store down: say so now."""
        if self.store_down_since is None:
            self.store_down_since = self.clock.now()
            log.error("store unavailable, spooling: %s", exc)
        self.last_error = _first_line(exc)
        self.wake()

    def drain_once(self) -> int:
        """Store one batch; return how many records were committed (0: nothing to do)."""
        now = self.clock.now()
        try:
            if not self._loaded:
                self._load_cursor(now)
            records = self.spool.read(self._committed, self.batch)
            if not records:
                self.caught_up_at = now
                if self.store_down_since is not None or (
                    self._last_contact is None or now - self._last_contact >= self.check_every
                ):
                    self._ping(now)
                self._recovered(now)
                return 0
            self._commit(records, now)
            if len(records) < self.batch:
                self.caught_up_at = now
        except Exception as exc:
            if not store_unavailable(exc):
                raise
            # the commit may have gone through before the connection broke: read the cursor
            # again before the next attempt instead of trusting ours
            self._loaded = False
            if self.store_down_since is None:
                self.store_down_since = now
                log.error("store unavailable, spooling: %s", exc)
            self.last_error = _first_line(exc)
            return 0
        self._last_contact = now
        self._recovered(now)
        self.stored += len(records)
        self.spool.trim(records[-1].end)
        return len(records)

    def _load_cursor(self, now: float) -> None:
        with self.store.connect() as conn:
            saved = self.store.get_meta(conn, CURSOR_KEY)
        cursor: Position | None = (int(saved[0]), int(saved[1])) if saved else None
        if cursor is not None and cursor > self.spool.end:
            # the store's cursor is past everything this log ever held: the spool directory
            # was replaced (a new machine, a restored store). What it holds now was never
            # stored, so all of it is replayed rather than skipped.
            log.warning(
                "spool cursor %s is beyond the log's end %s; replaying the whole spool",
                cursor,
                self.spool.end,
            )
            cursor = None
        self._committed = cursor
        self._loaded = True
        self._last_contact = now

    def _ping(self, now: float) -> None:
        with self.store.connect() as conn:
            conn.execute(text("SELECT 1"))
        self._last_contact = now

    def _commit(self, records: list[Record], now: float) -> None:
        try:
            with self.store.begin() as conn:
                self._write(conn, records, now)
        except Exception as exc:
            if store_unavailable(exc) or len(records) == 1:
                if not store_unavailable(exc):
                    self._bury(records[0], exc, now)
                    return
                raise
            # one record the handler rejects must not block the others: take them one by one
            for record in records:
                self._commit([record], now)
            return
        self._committed = records[-1].end
        counts: dict[str, int] = {}
        for record in records:
            counts[record.kind] = counts.get(record.kind, 0) + 1
        for kind, n in counts.items():
            self.stored_kinds.add(kind, n)
            for listener in self.listeners:
                listener(kind, n)

    def _write(self, conn: Connection, records: list[Record], now: float) -> None:
        for kind, run in groupby(records, key=lambda r: r.kind):
            handler = self.handlers.get(kind)
            payloads = [r.payload for r in run]
            if handler is None:
                raise LookupError(f"no handler for spooled records of kind '{kind}'")
            handler(conn, payloads, now)
        self.store.set_meta(conn, CURSOR_KEY, list(records[-1].end), now)

    def _bury(self, record: Record, exc: Exception, now: float) -> None:
        """Keep the rejected record beside the spool with the reason, and move past it."""
        dead = self.spool.directory / "dead"
        dead.mkdir(exist_ok=True)
        name = f"{record.end[0]:010d}-{record.end[1]:012d}"
        (dead / f"{name}.{record.kind}").write_bytes(record.payload)
        (dead / f"{name}.json").write_text(
            json.dumps({"kind": record.kind, "error": repr(exc)[:2000], "at": now})
        )
        log.error("spooled %s record rejected, kept in %s: %r", record.kind, dead, exc)
        with self.store.begin() as conn:
            self.store.set_meta(conn, CURSOR_KEY, list(record.end), now)
        self._committed = record.end
        self.dead += 1

    def _recovered(self, now: float) -> None:
        if self.store_down_since is not None:
            log.warning(
                "store available again after %.0f s; replaying the spool",
                now - self.store_down_since,
            )
            self.store_down_since = None
            self.last_error = None

    def snapshot(self) -> dict[str, object]:
        """The drainer's view for /healthz, `status` and the watchdog."""
        return {
            "store_available": self.store_down_since is None,
            "store_down_since": self.store_down_since,
            "last_error": self.last_error,
            "backlog_bytes": self.backlog_bytes,
            "stored": self.stored,
            "dead": self.dead,
        }

    def drain_all(self) -> int:
        total = 0
        while n := self.drain_once():
            total += n
        return total

    async def loop(self, stop: asyncio.Event, idle: float = 1.0) -> None:
        """Drain whenever woken (or every `idle` s); back off while the store is down."""
        self._wake.bind()
        pause = idle
        while not stop.is_set():
            try:
                n = await asyncio.to_thread(self.drain_once)
            except Exception:
                log.exception("spool drainer failed")
                n = 0
            if n:
                pause = idle
                if n < self.batch:
                    # a partial batch: let arrivals gather for a moment, since each
                    # transaction has a fixed cost (~3 ms) that tiny batches pay per record
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), GATHER)
                continue
            if self.store_down_since is not None:
                pause = min(pause * 2, 15.0)
            self._wake.clear()
            waiters = [asyncio.ensure_future(stop.wait())]
            if self.store_down_since is None:
                # while the store is down, arrivals must not turn into reconnect storms
                waiters.append(asyncio.ensure_future(self._wake.wait()))
            await asyncio.wait(waiters, timeout=pause, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()


def _first_line(exc: BaseException) -> str:
    lines = str(exc).splitlines()
    return (lines[0] if lines else exc.__class__.__name__)[:300]
