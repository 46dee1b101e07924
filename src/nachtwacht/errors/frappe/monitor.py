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
- Rotation as in the `logfile` probe: rename (logrotate's default) is noticed by the inode;
  the rotated file (same directory, name starting with the log's name) is read to its end
  first, and once more at the next tick (a flush may have been writing during the rename),
  then the new file from its start. Copytruncate (same inode, shorter than our offset)
  restarts at 0. At most 50 MB are read per tick; a backlog is caught up over several ticks.
- First sight of the file: start at its end unless `from_start` (history is not counted). A
  file that was missing at first sight, or that replaced a rotated one, is read whole.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import Connection, delete, select, update

from nachtwacht.errors.models import FrappeMonitorLog
from nachtwacht.probes.base import os_reason
from nachtwacht.probes.kinds.logfile import _meta_key
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store

log = logging.getLogger(__name__)

MAX_BYTES_PER_TICK = 50 * 1024 * 1024
KEEP_MINUTES = 30
RECENT_UUIDS = 64
EXACT_LIMIT = 256  # distinct durations a minute's sketch keeps exactly
ALPHA = 0.01  # relative accuracy of the bucketed sketch
GAMMA = (1 + ALPHA) / (1 - ALPHA)
LOG_GAMMA = math.log(GAMMA)
FUTURE_SLACK = 3600.0  # a line stamped further ahead than this is garbage, not a request


class MonitorLogError(Exception):
    """The log cannot be read: missing, unreadable or not a file."""


# -- p95 across reads ----------------------------------------------------------------------------


def _bucket(us: int) -> int:
    return math.ceil(math.log(max(us, 1)) / LOG_GAMMA)


def _bucket_value(index: int) -> float:
    # the point of (GAMMA^(i-1), GAMMA^i] within ALPHA of every value in it
    return 2 * GAMMA**index / (GAMMA + 1)


class Sketch:
    """Durations (µs) of one minute: exact counts, or log buckets once there are many."""

    __slots__ = ("exact", "buckets")

    def __init__(self) -> None:
        self.exact: dict[int, int] | None = {}
        self.buckets: dict[int, int] = {}

    def add(self, us: int, count: int = 1) -> None:
        if self.exact is not None:
            self.exact[us] = self.exact.get(us, 0) + count
            if len(self.exact) > EXACT_LIMIT:
                self._collapse()
        else:
            index = _bucket(us)
            self.buckets[index] = self.buckets.get(index, 0) + count

    def _collapse(self) -> None:
        assert self.exact is not None
        exact, self.exact = self.exact, None
        for us, count in exact.items():
            self.add(us, count)

    def merge(self, other: Sketch) -> None:
        if other.exact is not None:
            for us, count in other.exact.items():
                self.add(us, count)
            return
        if self.exact is not None:
            self._collapse()
        for index, count in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + count

    def quantile(self, q: float) -> float | None:
        """The nearest-rank q-quantile in µs (exact, or within ALPHA once bucketed)."""
        items = sorted((self.exact if self.exact is not None else self.buckets).items())
        total = sum(count for _, count in items)
        if not total:
            return None
        rank = max(1, math.ceil(q * total - 1e-9))
        seen = 0
        for key, count in items:
            seen += count
            if seen >= rank:
                return float(key) if self.exact is not None else _bucket_value(key)
        return None  # unreachable: the counts sum to total

    def dump(self) -> dict[str, list[list[int]]]:
        if self.exact is not None:
            return {"e": [[k, c] for k, c in self.exact.items()]}
        return {"b": [[k, c] for k, c in self.buckets.items()]}

    @classmethod
    def load(cls, value: Any) -> Sketch | None:
        if not isinstance(value, dict):
            return None
        sketch = cls()
        try:
            if "b" in value:
                sketch.exact = None
                sketch.buckets = {int(k): int(c) for k, c in value["b"]}
            else:
                sketch.exact = {int(k): int(c) for k, c in value["e"]}
        except (KeyError, TypeError, ValueError):
            return None
        return sketch


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
    dev: int | None = None
    inode: int | None = None
    offset: int = 0
    rotated: bool = False  # the path names another file; ours gets one more read
    newest: int | None = None  # the newest minute counted
    minutes: list[int] = field(default_factory=list)  # minutes whose sketches are kept
    recent: list[str] = field(default_factory=list)  # uuids of the last lines counted

    def dump(self) -> dict[str, Any]:
        return {
            "dev": self.dev,
            "inode": self.inode,
            "offset": self.offset,
            "rotated": self.rotated,
            "newest": self.newest,
            "minutes": self.minutes,
            "recent": self.recent,
        }

    @classmethod
    def load(cls, value: Any) -> TailState | None:
        if not isinstance(value, dict):
            return None
        try:
            return cls(
                dev=None if value.get("dev") is None else int(value["dev"]),
                inode=None if value.get("inode") is None else int(value["inode"]),
                offset=int(value.get("offset", 0)),
                rotated=bool(value.get("rotated", False)),
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
        self.meta_key = _meta_key("frappe.monitor.", cfg.name)
        self.state: TailState | None = None
        self._fresh = True  # no saved position: the first sight decides where to start
        # since start, for the curious (and the tests)
        self.counted = self.jobs = self.other_sites = self.repeats = self.bad = 0

    async def tick(self, now: float) -> int:
        """Count the lines appended since the last tick; return how many requests."""
        return await asyncio.to_thread(self.poll, now)

    def poll(self, now: float) -> int:
        if self.state is None:
            with self.store.connect() as conn:
                saved = TailState.load(self.store.get_meta(conn, self.meta_key))
            self._fresh = saved is None
            self.state = saved or TailState()
        state = self.state.copy()
        blobs, error = self._read(state)
        self._fresh = False
        minutes = self._count(blobs, state, now)
        if minutes or state.dump() != self.state.dump():
            with self.store.begin() as conn:
                self._commit(conn, minutes, state, now)
            self.state = state  # only now: a failed commit reads the same bytes again
        if error is not None:
            raise MonitorLogError(error)
        return sum(m.n for m in minutes.values())

    # -- reading ---------------------------------------------------------------------------

    def _read(self, state: TailState) -> tuple[list[bytes], str | None]:
        path = self.cfg.path
        try:
            st: os.stat_result | None = os.stat(path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            return [], f"monitor log {path} is not readable: {os_reason(exc)}"
        blobs: list[bytes] = []
        budget = MAX_BYTES_PER_TICK
        replaced = False
        if state.inode is not None and (st is None or (st.st_dev, st.st_ino) != _ident(state)):
            old = self._rotated_path(state)
            if old is not None:
                data, state.offset, eof = _read_lines(
                    old, _ident(state), state.offset, budget, final=state.rotated
                )
                blobs.append(data)
                if not state.rotated:
                    state.rotated = True  # a flush may still be writing to it: once more
                    return blobs, None
                if not eof:
                    return blobs, None  # the rest of it at the next tick
            else:
                log.warning(
                    "monitor log %s was rotated and the old file is gone; lines written to it "
                    "after the last read are not counted",
                    path,
                )
            state.dev = state.inode = None
            state.offset, state.rotated, replaced = 0, False, True
        if st is None:
            return blobs, f"monitor log {path} not found"
        if state.inode is None:
            start = 0
            if self._fresh and not replaced and not self.cfg.from_start:
                start = _end_of_last_line(path, st.st_size)
            state.dev, state.inode, state.offset = st.st_dev, st.st_ino, start
        elif st.st_size < state.offset:
            state.offset = 0  # copytruncate: all of it is new
        data, state.offset, _eof = _read_lines(path, _ident(state), state.offset, budget, False)
        blobs.append(data)
        return blobs, None

    def _rotated_path(self, state: TailState) -> str | None:
        """The file we were reading, renamed beside the log (`monitor.json.log.1`)."""
        directory, base = os.path.split(self.cfg.path)
        try:
            entries = list(os.scandir(directory or "."))
        except OSError:
            return None
        for entry in entries:
            if entry.name == base or not entry.name.startswith(base):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == _ident(state):
                return entry.path
        return None

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
        return _meta_key(f"frappe.monitor.m{minute}.", self.cfg.name)


def _ident(state: TailState) -> tuple[int | None, int | None]:
    return (state.dev, state.inode)


def _read_lines(
    path: str, ident: tuple[int | None, int | None], offset: int, budget: int, final: bool
) -> tuple[bytes, int, bool]:
    """Complete lines from `offset` (at most `budget` bytes), the offset after them, and
    whether that is the end of the file.

    `final`: the writer has moved on, so an unterminated last line is a line too.
    """
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if (st.st_dev, st.st_ino) != ident:
                return b"", offset, False  # renamed between stat and open: next tick
            fh.seek(offset)
            data = fh.read(budget)
    except FileNotFoundError:
        return b"", offset, True  # gone: nothing more will come from it
    except IsADirectoryError:
        raise MonitorLogError(f"monitor log {path} is a directory") from None
    except OSError as exc:
        raise MonitorLogError(f"monitor log {path} is not readable: {os_reason(exc)}") from None
    end = offset + len(data)
    if final and end >= st.st_size:
        return data, end, True
    cut = data.rfind(b"\n") + 1
    return data[:cut], offset + cut, offset + cut >= st.st_size


def _end_of_last_line(path: str, size: int) -> int:
    """Where the first line we count starts: after the last newline already in the file."""
    with open(path, "rb") as fh:
        start = max(0, size - 65536)
        fh.seek(start)
        tail = fh.read(size - start)
    cut = tail.rfind(b"\n")
    return start + cut + 1 if cut >= 0 else size


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
