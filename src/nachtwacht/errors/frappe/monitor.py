"""Tail a bench's `logs/monitor.json.log` into per-minute request metrics (`request_minutes`).

Frappe (with `"monitor": 1` in common_site_config.json) queues one JSON line per request or
background job in Redis, and a scheduled job (`frappe.monitor.flush`) appends the queue to
this file every few minutes. A request line:

    {"duration": 1234, "request": {"ip": ..., "method": "GET", "path": "/api/method/x",
     "response_length": 52, "status_code": 200}, "site": "erp.example.com",
     "timestamp": "2026-11-27 09:00:00.123456", "transaction_type": "request", "uuid": "..."}

`duration` is in microseconds, `timestamp` is when the request began (UTC since v14; older
versions wrote it without an offset in another zone: `timestamp_timezone`).

Decisions:

- Rows are keyed (source = the entry's name, minute = epoch minute of `timestamp`) with n,
  n_5xx, n_4xx, duration_sum_ms, duration_max_ms and p95_ms (nearest rank). Job lines
  (`"transaction_type": "job"`) are not requests and are skipped; so are other sites' lines
  when `site` is set (the log is bench-wide), and unreadable lines (counted in `bad`).
- Frappe's flush trims its Redis list from the last index it wrote, so that line is written
  again at the head of the next flush: a line whose `uuid` is among the last 64 counted is a
  repeat and is skipped.
- Exactly once: the rows, the read position and the p95 sketches are written in one
  transaction; a failed commit leaves the position where it was, and the same bytes are read
  again. Only complete lines are read; a partial last line waits for its newline.
- A minute spans several reads (lines arrive minutes late, with every flush). Each recent
  minute keeps a sketch of its durations in engine_meta: exact values while it has at most 256
  distinct ones (so p95 is exact), then log buckets of 2% width (p95 within 1%). Sketches
  of minutes more than 30 minutes before the newest line counted are dropped; a line later
  than that still adds exactly to n, the sums and the max, but its minute's p95 becomes the
  larger of the stored one and that of the late lines (an upper bound).
- The file is followed by `nachtwacht.tailer`, as the `logfile` probe's is: rename rotation
  (the rotated file is kept open and read to its end, before the new file, until a tick finds
  nothing more in it: a flush may have been writing during the rename), copytruncate,
  partial lines, a file that goes away and comes back, at most 50 MB per tick (a backlog is
  caught up over several ticks). Its position is part of the state committed with the rows.
- First sight of the file: start at its end unless `from_start` (history is not counted, nor
  the rest of a line the end falls in). A file that was missing at first sight, or that
  replaced a rotated one, is read whole.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import Connection, delete, select, update

from nachtwacht.errors.frappe.sketch import Sketch
from nachtwacht.errors.models import FrappeMonitorLog
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store, meta_key
from nachtwacht.tailer import Position, Tailer

log = logging.getLogger(__name__)

MAX_BYTES_PER_TICK = 50 * 1024 * 1024
KEEP_MINUTES = 30
RECENT_UUIDS = 64
FUTURE_SLACK = 3600.0  # a line stamped further ahead than this is garbage, not a request


class MonitorLogError(Exception):
    """The log cannot be read: missing, unreadable or not a file."""


@dataclass
class Minute:
    n: int = 0
    n_5xx: int = 0
    n_4xx: int = 0
    sum_us: int = 0
    max_us: int = 0
    sketch: Sketch = field(default_factory=Sketch)

    def add(self, us: int, status: Any) -> None:
        self.n += 1
        if isinstance(status, int):
            if 500 <= status <= 599:
                self.n_5xx += 1
            elif 400 <= status <= 499:
                self.n_4xx += 1
        self.sum_us += us
        self.max_us = max(self.max_us, us)
        self.sketch.add(us)


# -- where we are in the file ----------------------------------------------------------------


@dataclass
class TailState:
    position: Position = field(default_factory=Position)  # the tailer's, committed
    newest: int | None = None  # the newest minute counted
    minutes: list[int] = field(default_factory=list)  # minutes whose sketches are kept
    recent: list[str] = field(default_factory=list)  # uuids of the last lines counted

    def dump(self) -> dict[str, Any]:
        return {
            **self.position.dump(),
            "newest": self.newest,
            "minutes": self.minutes,
            "recent": self.recent,
        }

    @classmethod
    def load(cls, value: Any) -> TailState | None:
        if not isinstance(value, dict):
            return None
        position = Position.load(value)
        if position is None:
            return None
        try:
            return cls(
                position=position,
                newest=None if value.get("newest") is None else int(value["newest"]),
                minutes=[int(m) for m in value.get("minutes", [])],
                recent=[str(u) for u in value.get("recent", [])],
            )
        except (TypeError, ValueError):
            return None

    def copy(self) -> TailState:
        return TailState.load(self.dump()) or TailState()


class MonitorTail:
    def __init__(self, cfg: FrappeMonitorLog, store: Store) -> None:
        self.cfg = cfg
        self.store = store
        self.zone = ZoneInfo(cfg.timestamp_timezone)
        self.meta_key = meta_key("frappe.monitor.", cfg.name)
        self.state: TailState | None = None  # as committed; None: load it from the store
        self.tailer: Tailer | None = None
        # since start, for the curious (and the tests)
        self.counted = self.jobs = self.other_sites = self.repeats = self.bad = 0

    async def tick(self, now: float) -> int:
        """Count the lines appended since the last tick; return how many requests."""
        return await asyncio.to_thread(self.poll, now)

    def close(self) -> None:
        """Close the files being read (the next poll reopens them where the store says)."""
        if self.tailer is not None:
            self.tailer.close()
        self.state = self.tailer = None

    def poll(self, now: float) -> int:
        if self.state is None or self.tailer is None:
            with self.store.connect() as conn:
                saved = TailState.load(self.store.get_meta(conn, self.meta_key))
            self.state = saved or TailState()
            self.tailer = Tailer(
                self.cfg.path,
                label="monitor log",
                from_start=self.cfg.from_start,
                resume=saved.position if saved is not None else None,
            )
        blobs: list[bytes] = []
        read = self.tailer.read(blobs.append, MAX_BYTES_PER_TICK)
        state = self.state.copy()
        minutes = self._count(blobs, state, now)
        state.position = self.tailer.position()
        if minutes or state.dump() != self.state.dump():
            try:
                with self.store.begin() as conn:
                    self._commit(conn, minutes, state, now)
            except BaseException:
                # the tailer is past what was committed: the next tick reopens the files
                # where the store says, and reads the same bytes again
                self.tailer.close()
                self.state = self.tailer = None
                raise
            self.state = state
        if read.error is not None:
            raise MonitorLogError(read.error)
        return sum(m.n for m in minutes.values())

    # -- counting --------------------------------------------------------------------------

    def _count(self, blobs: list[bytes], state: TailState, now: float) -> dict[int, Minute]:
        minutes: dict[int, Minute] = {}
        recent = dict.fromkeys(state.recent)
        site, zone = self.cfg.site, self.zone
        for blob in blobs:
            for line in blob.split(b"\n"):
                if not line.strip():
                    continue
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    self.bad += 1
                    continue
                if not isinstance(entry, dict):
                    self.bad += 1
                    continue
                request = entry.get("request")
                if entry.get("transaction_type") != "request" or not isinstance(request, dict):
                    self.jobs += 1
                    continue
                if site is not None and entry.get("site") != site:
                    self.other_sites += 1
                    continue
                ts = _epoch(entry.get("timestamp"), zone)
                duration = entry.get("duration")
                if (
                    ts is None
                    or ts > now + FUTURE_SLACK
                    or not isinstance(duration, int | float)
                    or isinstance(duration, bool)
                    or duration < 0
                ):
                    self.bad += 1
                    continue
                uid = entry.get("uuid")
                if isinstance(uid, str):
                    if uid in recent:
                        self.repeats += 1
                        continue
                    recent[uid] = None
                    if len(recent) > RECENT_UUIDS:
                        del recent[next(iter(recent))]
                minute = minutes.get(int(ts // 60))
                if minute is None:
                    minute = minutes[int(ts // 60)] = Minute()
                minute.add(int(round(duration)), request.get("status_code"))
                self.counted += 1
        state.recent = list(recent)
        return minutes

    # -- writing ---------------------------------------------------------------------------

    def _commit(
        self, conn: Connection, minutes: dict[int, Minute], state: TailState, now: float
    ) -> None:
        rm, source = t.request_minutes, self.cfg.name
        kept = set(state.minutes)
        if minutes:
            keys = sorted(minutes)
            state.newest = max(state.newest if state.newest is not None else keys[-1], keys[-1])
            existing = {}
            for i in range(0, len(keys), 500):
                part = keys[i : i + 500]
                for row in conn.execute(
                    select(rm).where(rm.c.source == source, rm.c.minute.in_(part))
                ):
                    existing[row.minute] = row
            saved = self._sketches(conn, [m for m in keys if m in kept and m in existing])
            for m in keys:
                sketch = self._write_minute(conn, m, minutes[m], existing.get(m), saved.get(m))
                late = m < state.newest - KEEP_MINUTES
                if sketch is not None and not late:
                    self.store.set_meta(conn, self._sketch_key(m), sketch.dump(), now)
                    kept.add(m)
        keep_from = (state.newest or 0) - KEEP_MINUTES
        dropped = sorted(m for m in kept if m < keep_from)
        if dropped:
            conn.execute(
                delete(t.engine_meta).where(
                    t.engine_meta.c.key.in_([self._sketch_key(m) for m in dropped])
                )
            )
        state.minutes = sorted(kept - set(dropped))
        self.store.set_meta(conn, self.meta_key, state.dump(), now)

    def _write_minute(
        self,
        conn: Connection,
        m: int,
        new: Minute,
        row: Any,
        saved: Sketch | None,
    ) -> Sketch | None:
        """Merge one minute into its row; return the minute's whole sketch (None: unknown)."""
        rm = t.request_minutes
        if row is None:
            total = new.sketch
        elif saved is not None:
            saved.merge(new.sketch)
            total = saved
        else:
            total = None  # its sketch is gone: the p95 below is an upper bound
        p95_us = total.quantile(0.95) if total is not None else new.sketch.quantile(0.95)
        values = {
            "n": new.n,
            "n_5xx": new.n_5xx,
            "n_4xx": new.n_4xx,
            "duration_sum_ms": new.sum_us / 1000.0,
            "duration_max_ms": new.max_us / 1000.0,
        }
        if row is not None:
            values = {
                "n": row.n + new.n,
                "n_5xx": row.n_5xx + new.n_5xx,
                "n_4xx": row.n_4xx + new.n_4xx,
                "duration_sum_ms": row.duration_sum_ms + values["duration_sum_ms"],
                "duration_max_ms": max(row.duration_max_ms, values["duration_max_ms"]),
            }
        p95 = None if p95_us is None else min(p95_us / 1000.0, values["duration_max_ms"])
        if total is None and row.p95_ms is not None and p95 is not None:
            p95 = max(p95, row.p95_ms)
        columns: dict[str, float | None] = {**values, "p95_ms": p95}
        if row is None:
            conn.execute(rm.insert().values(source=self.cfg.name, minute=m, **columns))
        else:
            conn.execute(
                update(rm).where(rm.c.source == self.cfg.name, rm.c.minute == m).values(**columns)
            )
        return total

    def _sketches(self, conn: Connection, minutes: list[int]) -> dict[int, Sketch]:
        if not minutes:
            return {}
        keys = {self._sketch_key(m): m for m in minutes}
        out: dict[int, Sketch] = {}
        em = t.engine_meta
        for key, value in conn.execute(select(em.c.key, em.c.value).where(em.c.key.in_(keys))):
            sketch = Sketch.load(orjson.loads(value))
            if sketch is not None:
                out[keys[key]] = sketch
        return out

    def _sketch_key(self, minute: int) -> str:
        return meta_key(f"frappe.monitor.m{minute}.", self.cfg.name)


def _epoch(value: Any, zone: ZoneInfo) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.timestamp()
