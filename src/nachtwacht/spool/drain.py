"""Move spooled records into the store, in order, exactly once.

Handlers are registered per record kind: `handler(conn, payloads, now)` writes a run of
consecutive records of its kind inside the drainer's transaction, which also moves the cursor
(`spool.cursor` in engine_meta). Either both commit or neither does, so a kill -9 anywhere
replays from the last committed record and nothing is stored twice.

When the store is unavailable the drainer says so (`store_down_since`) and retries with a
growing pause; records keep arriving in the log meanwhile. A record its handler rejects (a
bug, not an outage) goes to `dead/` with the reason, so one bad record cannot stop the rest.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from nachtwacht.clock import Clock
from nachtwacht.spool.log import Position, Record, SpoolLog
from nachtwacht.store.db import Store, StoreError

log = logging.getLogger(__name__)

Handler = Callable[[Connection, list[bytes], float], None]
CURSOR_KEY = "spool.cursor"


def store_unavailable(exc: BaseException) -> bool:
    """An outage (retry later) rather than a record the handler cannot take."""
    if isinstance(exc, StoreError):
        return True
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


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
    _committed: Position | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    listeners: list[Callable[[str, int], None]] = field(default_factory=list)

    def register(self, kind: str, handler: Handler) -> None:
        self.handlers[kind] = handler

    def wake(self) -> None:
        self._wake.set()

    @property
    def backlog_bytes(self) -> int:
        return self.spool.backlog(self._committed)

    def drain_once(self) -> int:
        """Store one batch; return how many records were committed (0: nothing to do)."""
        now = self.clock.now()
        try:
            if self._committed is None:
                with self.store.connect() as conn:
                    saved = self.store.get_meta(conn, CURSOR_KEY)
                self._committed = tuple(saved) if saved else None  # type: ignore[assignment]
            records = self.spool.read(self._committed, self.batch)
            if not records:
                self._recovered(now)
                return 0
            self._commit(records, now)
        except Exception as exc:
            if not store_unavailable(exc):
                raise
            if self.store_down_since is None:
                self.store_down_since = now
                log.error("store unavailable, spooling: %s", exc)
            self.last_error = str(exc).splitlines()[0][:300]
            return 0
        self._recovered(now)
        self.stored += len(records)
        self.spool.trim(records[-1].end)
        return len(records)

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

    def drain_all(self) -> int:
        total = 0
        while n := self.drain_once():
            total += n
        return total

    async def loop(self, stop: asyncio.Event, idle: float = 1.0) -> None:
        """Drain whenever woken (or every `idle` s); back off while the store is down."""
        pause = idle
        while not stop.is_set():
            try:
                n = await asyncio.to_thread(self.drain_once)
            except Exception:
                log.exception("spool drainer failed")
                n = 0
            if n:
                pause = idle
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
