"""Limit/offset windows and totals for list queries, so lists page in SQL, not in Python."""

from __future__ import annotations

from sqlalchemy import Connection, Select, func, select


def window(query: Select, limit: int | None, offset: int = 0) -> Select:
    """`query` cut to one page; `limit=None` means no upper bound (CLI and internal callers)."""
    if limit is not None:
        query = query.limit(limit)
    return query.offset(offset) if offset else query


def count(conn: Connection, query: Select) -> int:
    """How many rows `query` yields without its order and window (for X-Total-Count)."""
    inner = query.order_by(None).limit(None).offset(None).subquery()
    return int(conn.execute(select(func.count()).select_from(inner)).scalar_one())
