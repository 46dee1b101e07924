"""Uptime per probe over a window (24 h, 7 d, 30 d): sum(n_ok) / sum(n) of the rollups.

A window is read from two tables:

- `rollup_hour` for every hour below the hour watermark (`rollups.HOUR_KEY`: the hours already
  rolled up), starting with the hour that contains the window's start: one query per window for
  all probes;
- `rollup_minute` for the minutes from the watermark on (the last hour or two, which the hourly
  rollup has not reached yet): one query shared by every window.

So a window starts at a whole hour: "24 h" covers between 24 and 25 hours, well inside what a
percentage with two decimals shows, and a 30-day window reads 720 rows per probe instead of
43,200, whatever the minute retention is. Without an hour watermark (the rollups never ran: data
loaded by hand, as a benchmark does), hours before the current one count as rolled up.

Rollup rows only appear when a watermark moves, so `UptimeCache` keeps each part for as long as
its watermarks stay put: the hour part of a window for up to an hour, the minute part until the
next minute is rolled up. An overview polled every few seconds then costs one small query (the
watermarks). Without a minute watermark the minute part is read every time. The hour query joins
`probes` so that it seeks the (probe_id, bucket) key per probe instead of scanning every hour
ever kept (400 days by default).

Availability counts OK results only: a warning is not "up". A probe without any rolled-up
result in the window has no availability (None), which is not the same as 0 %.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping

from sqlalchemy import Connection, func, select

from nachtwacht.probes.rollups import HOUR_KEY, MINUTE_KEY
from nachtwacht.store import tables as t

WINDOWS: dict[str, float] = {"24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}
Sums = dict[int, tuple[int, int]]  # probe id -> (n, n_ok)


def watermarks(conn: Connection) -> tuple[int | None, int | None]:
    """(hours below this are rolled up, minutes below this are rolled up); None when unset."""
    meta = t.engine_meta.c
    found = {
        key: int(json.loads(value))
        for key, value in conn.execute(
            select(meta.key, meta.value).where(meta.key.in_((HOUR_KEY, MINUTE_KEY)))
        )
    }
    return found.get(HOUR_KEY), found.get(MINUTE_KEY)


def hour_sums(conn: Connection, first_hour: int, split: int) -> Sums:
    """(n, n_ok) per probe over the hours [first_hour, split) of `rollup_hour`."""
    if split <= first_hour:
        return {}
    h = t.rollup_hour.c
    query = (
        select(t.probes.c.id, func.sum(h.n), func.sum(h.n_ok))
        .select_from(
            t.probes.join(
                t.rollup_hour,
                (h.probe_id == t.probes.c.id) & (h.bucket >= first_hour) & (h.bucket < split),
            )
        )
        .group_by(t.probes.c.id)
    )
    return {int(pid): (int(n or 0), int(ok or 0)) for pid, n, ok in conn.execute(query)}


def minute_sums(conn: Connection, first_minute: int) -> Sums:
    """(n, n_ok) per probe over the minutes from `first_minute` on, in `rollup_minute`."""
    m = t.rollup_minute.c
    # Joined from `probes` like `hour_sums`, so every backend seeks the (probe_id, bucket)
    # primary key per probe and reads only the recent minutes. Grouping the table itself by
    # probe_id made SQLite walk that key from end to end instead of using the `hour` index:
    # every minute row kept (14 days by default: 20 million rows at 1,000 probes), 0.2 s for
    # each day of minute rows at 4,000 probes (bench/dashboard.py).
    query = (
        select(t.probes.c.id, func.sum(m.n), func.sum(m.n_ok))
        .select_from(
            t.probes.join(
                t.rollup_minute, (m.probe_id == t.probes.c.id) & (m.bucket >= first_minute)
            )
        )
        .group_by(t.probes.c.id)
    )
    return {int(pid): (int(n or 0), int(ok or 0)) for pid, n, ok in conn.execute(query)}


class UptimeCache:
    """Sums keyed by the bounds and watermarks they were read under; one entry per part."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[tuple[int, ...], Sums]] = {}

    def get(self, part: str, key: tuple[int, ...]) -> Sums | None:
        with self._lock:
            found = self._entries.get(part)
        return found[1] if found is not None and found[0] == key else None

    def put(self, part: str, key: tuple[int, ...], sums: Sums) -> None:
        with self._lock:
            self._entries[part] = (key, sums)  # the entry of older bounds goes


def uptime(
    conn: Connection,
    now: float,
    probe_ids: Iterable[int],
    windows: Mapping[str, float] = WINDOWS,
    cache: UptimeCache | None = None,
) -> dict[int, dict[str, float | None]]:
    """probe id → {window label → availability (0..1) or None}, for each of `probe_ids`."""
    ids = list(probe_ids)
    out: dict[int, dict[str, float | None]] = {pid: {} for pid in ids}
    if not ids:
        return out
    hour_mark, minute_mark = watermarks(conn)
    split = hour_mark if hour_mark is not None else int(now // 3600)
    recent: dict[int, Sums] = {}  # by first minute: the same for every window in practice
    for label, seconds in windows.items():
        first_hour = int((now - seconds) // 3600)
        hours = cache.get(f"hours:{label}", (first_hour, split)) if cache else None
        if hours is None:
            hours = hour_sums(conn, first_hour, split)
            if cache is not None:
                cache.put(f"hours:{label}", (first_hour, split), hours)
        first_minute = max(split, first_hour) * 60
        if first_minute not in recent:
            recent[first_minute] = _recent(conn, first_minute, minute_mark, cache)
        minutes = recent[first_minute]
        for pid in ids:
            n_h, ok_h = hours.get(pid, (0, 0))
            n_m, ok_m = minutes.get(pid, (0, 0))
            n = n_h + n_m
            out[pid][label] = (ok_h + ok_m) / n if n else None
    return out


def _recent(
    conn: Connection, first_minute: int, minute_mark: int | None, cache: UptimeCache | None
) -> Sums:
    # without a minute watermark nothing says when new rows arrive: read them every time
    if cache is None or minute_mark is None:
        return minute_sums(conn, first_minute)
    key = (first_minute, minute_mark)
    found = cache.get("minutes", key)
    if found is None:
        found = minute_sums(conn, first_minute)
        cache.put("minutes", key, found)
    return found


__all__ = ["WINDOWS", "UptimeCache", "hour_sums", "minute_sums", "uptime", "watermarks"]
