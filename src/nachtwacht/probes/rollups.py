"""Per-minute and per-hour rollups of raw results, and retention of all three.

Rollups are computed in SQL from closed minutes, behind a watermark claimed with a
conditional update, so a restart never double-counts and two processes never both roll up
the same minute.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, and_, case, delete, func, insert, select, update

from nachtwacht.config.schema import RetentionSettings
from nachtwacht.store import claims
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store

MINUTE_KEY = "rollup.minute.done"  # minutes < value are rolled up
HOUR_KEY = "rollup.hour.done"  # hours < value are rolled up
SETTLE = 15.0  # seconds a minute is given for batched writes to land before it is rolled up
MAX_MINUTES_PER_TICK = 180


def _claim(conn: Connection, store: Store, key: str, old: int | None, new: int, now: float) -> bool:
    if old is None:
        store.set_meta(conn, key, new, now)
        return True
    # the watermark moves from `old` to `new` once: the process that moves it rolls up
    return claims.claim(
        conn,
        t.engine_meta,
        key,
        t.engine_meta.c.value == str(old),
        values={"value": str(new), "updated_at": now},
    )


def _status_counts(status_col):  # noqa: ANN001, ANN202 - SQL expression helpers
    return [
        func.sum(case((status_col == code, 1), else_=0)).label(label)
        for code, label in ((0, "n_ok"), (1, "n_warning"), (2, "n_critical"), (3, "n_unknown"))
    ]


def roll_minutes(store: Store, now: float) -> int:
    """Roll up every closed minute not yet rolled up; return how many minutes were done."""
    closed = int((now - SETTLE) // 60)  # minutes < closed are complete
    with store.begin() as conn:
        done = store.get_meta(conn, MINUTE_KEY)
        start = done
        if start is None:
            first = conn.execute(select(func.min(t.results.c.minute))).scalar()
            start = first if first is not None else closed
        end = min(closed, start + MAX_MINUTES_PER_TICK)
        if end <= start:
            if done is None:
                store.set_meta(conn, MINUTE_KEY, start, now)
            return 0
        if not _claim(conn, store, MINUTE_KEY, done, end, now):
            return 0
        r = t.results.c
        source = (
            select(
                r.probe_id,
                r.minute,
                (r.minute // 60).label("hour"),
                func.count().label("n"),
                *_status_counts(r.status),
                func.sum(r.latency_ms),
                func.min(r.latency_ms),
                func.max(r.latency_ms),
                func.sum(r.value),
                func.min(r.value),
                func.max(r.value),
            )
            .where(and_(r.minute >= start, r.minute < end))
            .group_by(r.probe_id, r.minute)
        )
        m = t.rollup_minute.c
        conn.execute(
            insert(t.rollup_minute).from_select(
                [
                    m.probe_id,
                    m.bucket,
                    m.hour,
                    m.n,
                    m.n_ok,
                    m.n_warning,
                    m.n_critical,
                    m.n_unknown,
                    m.latency_sum,
                    m.latency_min,
                    m.latency_max,
                    m.value_sum,
                    m.value_min,
                    m.value_max,
                ],
                source,
            )
        )
        return end - start


def roll_hours(store: Store, now: float) -> int:
    with store.begin() as conn:
        minutes_done = store.get_meta(conn, MINUTE_KEY)
        if minutes_done is None:
            return 0
        closed = int(minutes_done // 60)  # hours < closed have every minute rolled up
        done = store.get_meta(conn, HOUR_KEY)
        start = done
        if start is None:
            first = conn.execute(select(func.min(t.rollup_minute.c.hour))).scalar()
            start = first if first is not None else closed
        end = min(closed, start + 48)
        if end <= start:
            if done is None:
                store.set_meta(conn, HOUR_KEY, start, now)
            return 0
        if not _claim(conn, store, HOUR_KEY, done, end, now):
            return 0
        m = t.rollup_minute.c
        source = (
            select(
                m.probe_id,
                m.hour,
                func.sum(m.n),
                func.sum(m.n_ok),
                func.sum(m.n_warning),
                func.sum(m.n_critical),
                func.sum(m.n_unknown),
                func.sum(m.latency_sum),
                func.min(m.latency_min),
                func.max(m.latency_max),
                func.sum(m.value_sum),
                func.min(m.value_min),
                func.max(m.value_max),
            )
            .where(and_(m.hour >= start, m.hour < end))
            .group_by(m.probe_id, m.hour)
        )
        h = t.rollup_hour.c
        conn.execute(
            insert(t.rollup_hour).from_select(
                [
                    h.probe_id,
                    h.bucket,
                    h.n,
                    h.n_ok,
                    h.n_warning,
                    h.n_critical,
                    h.n_unknown,
                    h.latency_sum,
                    h.latency_min,
                    h.latency_max,
                    h.value_sum,
                    h.value_min,
                    h.value_max,
                ],
                source,
            )
        )
        return end - start


def apply_retention(store: Store, now: float, keep: RetentionSettings) -> dict[str, int]:
    """Delete what is past its window; raw results only once they are rolled up."""
    deleted: dict[str, int] = {}
    with store.begin() as conn:
        rolled = store.get_meta(conn, MINUTE_KEY)
        # nothing rolled up yet means nothing raw may go
        raw_cut = min(int((now - keep.raw) // 60), rolled) if rolled is not None else -1
        deleted["results"] = conn.execute(
            delete(t.results).where(t.results.c.minute < raw_cut)
        ).rowcount
        deleted["rollup_minute"] = conn.execute(
            delete(t.rollup_minute).where(t.rollup_minute.c.bucket < int((now - keep.minute) // 60))
        ).rowcount
        deleted["rollup_hour"] = conn.execute(
            delete(t.rollup_hour).where(t.rollup_hour.c.bucket < int((now - keep.hour) // 3600))
        ).rowcount
        cutoff = now - keep.state_changes
        deleted["state_changes"] = conn.execute(
            delete(t.state_changes).where(t.state_changes.c.ts < cutoff)
        ).rowcount
        deleted["heartbeat_pings"] = conn.execute(
            delete(t.heartbeat_pings).where(t.heartbeat_pings.c.ts < cutoff)
        ).rowcount
    return deleted


# -- results that arrive after their minute was rolled up -------------------------------------

_SUMS = ("n", "n_ok", "n_warning", "n_critical", "n_unknown", "latency_sum", "value_sum")
_LABELS = {0: "n_ok", 1: "n_warning", 2: "n_critical", 3: "n_unknown"}


def late_after(now: float) -> float:
    """Results older than this may be in a minute a roll-up has done (with 5 s to spare for
    another process's clock); `fold_late` takes care of them."""
    return now - SETTLE - 5.0


def fold_late(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Add results whose minute (and hour) is already rolled up to those rollups.

    An agent's backlog after an outage arrives minutes late; without this, uptime would leave
    it out. The watermarks are read with locking reads, so a roll-up moving them waits for this
    transaction (or this one for it): each result is counted by the roll-up or here, never both
    and never neither. Returns how many results were folded in.
    """
    meta = t.engine_meta.c
    marks = {
        key: json.loads(value)
        for key, value in conn.execute(
            select(meta.key, meta.value)
            .where(meta.key.in_([MINUTE_KEY, HOUR_KEY]))
            .order_by(meta.key)
            .with_for_update()
        ).all()
    }
    minutes_done, hours_done = marks.get(MINUTE_KEY), marks.get(HOUR_KEY)
    if minutes_done is None:
        return 0
    late = [r for r in rows if r["minute"] < minutes_done]
    groups: dict[tuple[int, int], dict[str, Any]] = {}
    for r in late:
        g = groups.setdefault((r["probe_id"], r["minute"]), _empty())
        _add(g, r["status"], r["latency_ms"], r["value"])
    for (probe_id, minute), g in sorted(groups.items()):
        hour = minute // 60
        _fold_into(conn, t.rollup_minute, probe_id, minute, g, {"hour": hour})
        if hours_done is not None and hour < hours_done:
            _fold_into(conn, t.rollup_hour, probe_id, hour, g, {})
    return len(late)


def _empty() -> dict[str, Any]:
    return {k: 0 for k in ("n", "n_ok", "n_warning", "n_critical", "n_unknown")} | {
        "latency_sum": None, "latency_min": None, "latency_max": None,
        "value_sum": None, "value_min": None, "value_max": None,
    }  # fmt: skip


def _add(g: dict[str, Any], status: int, latency: float | None, value: float | None) -> None:
    g["n"] += 1
    g[_LABELS.get(status, "n_unknown")] += 1
    for name, x in (("latency", latency), ("value", value)):
        if x is None:
            continue
        g[f"{name}_sum"] = x if g[f"{name}_sum"] is None else g[f"{name}_sum"] + x
        g[f"{name}_min"] = x if g[f"{name}_min"] is None else min(g[f"{name}_min"], x)
        g[f"{name}_max"] = x if g[f"{name}_max"] is None else max(g[f"{name}_max"], x)


def _fold_into(
    conn: Connection, table: Any, probe_id: int, bucket: int, g: dict[str, Any],
    extra: dict[str, Any],
) -> None:  # fmt: skip
    c = table.c
    key = and_(c.probe_id == probe_id, c.bucket == bucket)
    row = conn.execute(select(table).where(key).with_for_update()).mappings().first()
    if row is None:
        conn.execute(insert(table).values(probe_id=probe_id, bucket=bucket, **extra, **g))
        return
    merged = dict(g)
    for name in _SUMS:
        if row[name] is not None and g[name] is not None:
            merged[name] = row[name] + g[name]
        elif g[name] is None:
            merged[name] = row[name]
    for name in ("latency_min", "value_min"):
        merged[name] = _pick(min, row[name], g[name])
    for name in ("latency_max", "value_max"):
        merged[name] = _pick(max, row[name], g[name])
    conn.execute(update(table).where(key).values(**merged))


def _pick(how: Any, a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return a if b is None else b
    return how(a, b)
