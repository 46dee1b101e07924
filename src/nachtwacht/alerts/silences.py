"""Silences in the store: add, list, expire early.

A silence mutes what its matcher names (`probe:X`, `component:X`, `fingerprint:X` or `all`)
for a time; the input checks and `WindowError` are the maintenance windows' (`alerts.windows`).
Muting itself is decided in `alerts.maintenance.mute_reason`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select, select, update

from nachtwacht.alerts.windows import WindowError, clean_text, parse_matcher, window_state
from nachtwacht.clock import iso
from nachtwacht.config import limits
from nachtwacht.config.schema import Settings
from nachtwacht.durations import format_duration
from nachtwacht.store import paging
from nachtwacht.store import tables as t
from nachtwacht.store.db import inserted_id


def add_silence(
    conn: Connection,
    settings: Settings,
    *,
    matcher: str,
    starts_at: float,
    ends_at: float,
    now: float,
    created_by: str,
    comment: str | None = None,
) -> int:
    normalised = parse_matcher(settings, matcher)
    created_by = clean_text(created_by, "created_by", limits.NAME, required=True)
    if ends_at <= starts_at:
        raise WindowError("ends_at: the end must be after the start", "ends_at")
    if ends_at <= now:
        raise WindowError("ends_at: the end is already in the past", "ends_at")
    return inserted_id(
        conn.execute(
            t.silences.insert().values(
                matcher=normalised,
                starts_at=starts_at,
                ends_at=ends_at,
                created_by=created_by,
                comment=clean_text(comment, "comment", limits.TEXT) or None,
                expired_early_at=None,
            )
        )
    )


def get_silence(conn: Connection, silence_id: int) -> dict[str, Any] | None:
    found = conn.execute(select(t.silences).where(t.silences.c.id == silence_id)).mappings().first()
    return dict(found) if found is not None else None


def expire_silence(conn: Connection, silence_id: int, now: float) -> dict[str, Any]:
    row = get_silence(conn, silence_id)
    if row is None:
        raise WindowError(f"no silence #{silence_id}", "id", kind="not_found")
    if row["expired_early_at"] is not None and row["expired_early_at"] <= now:
        raise WindowError(f"silence #{silence_id} was already expired", "id", kind="conflict")
    if row["ends_at"] <= now:
        raise WindowError(f"silence #{silence_id} is already over", "id", kind="conflict")
    done = conn.execute(
        update(t.silences)
        .where(t.silences.c.id == silence_id, t.silences.c.expired_early_at.is_(None))
        .values(expired_early_at=now)
    ).rowcount
    if done != 1:
        raise WindowError(f"silence #{silence_id} was already expired", "id", kind="conflict")
    row["expired_early_at"] = now
    return row


def silence_view(row: dict[str, Any], now: float) -> dict[str, Any]:
    state = window_state(row["starts_at"], row["ends_at"], row["expired_early_at"], now)
    left = row["ends_at"] - max(now, row["starts_at"]) if state in ("active", "upcoming") else 0.0
    return {
        "id": row["id"],
        "matcher": row["matcher"],
        "state": state,
        "starts_at": iso(row["starts_at"]),
        "ends_at": iso(row["ends_at"]),
        "expired_early_at": iso(row["expired_early_at"]),
        "remaining": format_duration(left),
        "created_by": row["created_by"],
        "comment": row["comment"] or "",
    }


def _silences_query(now: float, include_past: bool) -> Select:
    s = t.silences.c
    query = select(t.silences).order_by(s.starts_at, s.id)
    if not include_past:
        query = query.where(s.ends_at > now, s.expired_early_at.is_(None))
    return query


def list_silences(
    conn: Connection,
    now: float,
    include_past: bool = False,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    query = paging.window(_silences_query(now, include_past), limit, offset)
    return [silence_view(dict(r), now) for r in conn.execute(query).mappings()]


def count_silences(conn: Connection, now: float, include_past: bool = False) -> int:
    return paging.count(conn, _silences_query(now, include_past))


__all__ = [
    "add_silence",
    "count_silences",
    "expire_silence",
    "get_silence",
    "list_silences",
    "silence_view",
]
