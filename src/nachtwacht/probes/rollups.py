"""Per-minute and per-hour rollups of raw results, and retention of all three.

Rollups are computed in SQL from closed minutes, behind a watermark claimed with a
conditional update, so a restart never double-counts and two processes never both roll up
the same minute.
"""

from __future__ import annotations

from sqlalchemy import Connection, and_, case, delete, func, insert, select

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
