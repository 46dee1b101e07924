"""The analytics results cache: JSON values in `analytics_cache` with an expiry time.

Keys start with `analytics_` and name the computation and its parameters
(`analytics_errors:days=7:env=*`, `analytics_forecast`, `analytics_baseline_compare`), so the
protocol's "clear the analytics cache" is `nachtwacht cache clear 'analytics_*'`. Shared through
the store, a result computed by the server is reused by the CLI and the other way round.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.exc import IntegrityError

from nachtwacht.store import tables as t
from nachtwacht.store.db import Store, StoreError

log = logging.getLogger(__name__)

PREFIX = "analytics_"
KEY_MAX = 200
_ESCAPE = "!"  # not a backslash: MySQL reads backslashes inside string literals


def glob_to_like(pattern: str) -> str:
    """A shell glob (`*` any run, `?` one character) as a LIKE pattern escaped with `!`."""
    out = []
    for ch in pattern:
        if ch in (_ESCAPE, "%", "_"):
            out.append(_ESCAPE + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def get(
    conn: Connection, key: str, now: float, min_remaining: float = 0.0
) -> tuple[Any, float] | None:
    """(value, computed_at) of an entry live for at least `min_remaining` more seconds."""
    c = t.analytics_cache.c
    row = conn.execute(
        select(c.value_json, c.computed_at).where(c.key == key, c.expires_at > now + min_remaining)
    ).first()
    return None if row is None else (json.loads(row[0]), float(row[1]))


def put(conn: Connection, key: str, value: Any, now: float, ttl: float) -> None:
    c = t.analytics_cache.c
    values = {"value_json": json.dumps(value), "computed_at": now, "expires_at": now + ttl}
    changed = conn.execute(update(t.analytics_cache).where(c.key == key).values(**values)).rowcount
    if not changed:
        conn.execute(t.analytics_cache.insert().values(key=key, **values))


def cached(
    store: Store,
    key: str,
    now: float,
    ttl: float,
    compute: Callable[[Connection], Any],
    min_remaining: float = 0.0,
) -> tuple[Any, dict[str, Any]]:
    """The cached value of `key`, or `compute(conn)` stored for `ttl` seconds.

    Returns (value, {"hit", "computed_at", "expires_at"}). A cache that cannot be written (two
    processes racing on one key, a read-only replica) costs a recomputation later, never the
    answer now. `min_remaining` > 0 treats an entry about to expire as missing (pre-computing).
    """
    if len(key) > KEY_MAX:
        raise ValueError(f"cache key longer than {KEY_MAX} characters")
    with store.connect() as conn:
        hit = get(conn, key, now, min_remaining) if ttl > 0 else None
        if hit is not None:
            value, computed_at = hit
            return value, {"hit": True, "computed_at": computed_at, "key": key}
        value = compute(conn)
    # through JSON now, so a fresh answer looks exactly like a cached one (tuples, int keys)
    value = json.loads(json.dumps(value))
    if ttl > 0:
        try:
            with store.begin() as conn:
                put(conn, key, value, now, ttl)
        except (IntegrityError, StoreError) as exc:
            log.warning("analytics result %s not cached: %s", key, exc)
    return value, {"hit": False, "computed_at": now, "key": key}


def clear(conn: Connection, pattern: str | None = None) -> int:
    """Delete the entries whose key matches the glob `pattern` (all without one); how many."""
    query = delete(t.analytics_cache)
    if pattern and pattern != "*":
        query = query.where(t.analytics_cache.c.key.like(glob_to_like(pattern), escape=_ESCAPE))
    return int(conn.execute(query).rowcount or 0)


def purge_expired(conn: Connection, now: float) -> int:
    c = t.analytics_cache.c
    return int(conn.execute(delete(t.analytics_cache).where(c.expires_at <= now)).rowcount or 0)


def entries(conn: Connection, now: float) -> list[dict[str, Any]]:
    c = t.analytics_cache.c
    rows = conn.execute(select(c.key, c.computed_at, c.expires_at).order_by(c.key)).mappings()
    return [
        {
            "key": r["key"],
            "computed_at": r["computed_at"],
            "expires_at": r["expires_at"],
            "live": r["expires_at"] > now,
        }
        for r in rows
    ]
