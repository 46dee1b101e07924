"""The protocol's run-time flags, stored in `flags`, switched by an admin and audited.

Every process reads them from the store and trusts what it read for `analytics.flag_cache`
seconds (5 by default), so `nachtwacht flags set` on the command line reaches a running server
within seconds, and a flag read on every request costs a dictionary lookup. A change made in
this process is seen at once.

What each flag does is documented in docs/analytics.md; in short:

- disable_advanced_analytics: fallback mode. Error-pattern analysis, forecasts, baseline
  comparisons and analytics alerts stop and answer "disabled". Probes, alerting, escalation
  and paging never read this flag and go on untouched.
- enable_performance_optimization: analytics results are cached for `optimized_cache_ttl`
  instead of `cache_ttl`, and the analytics engine module computes the dashboard's default
  views ahead of time, so no page load waits for them.
- enable_security_logging: every authenticated request, every refused one (401/403) and every
  change an admin makes is written as a JSON line to `analytics.security_log`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from sqlalchemy import Connection, select, update

# the names live with the config models (a runbook's set_flag step checks them); callers keep
# reading them here, next to what switches them
from nachtwacht.analytics.models import DISABLE_ANALYTICS as DISABLE_ANALYTICS
from nachtwacht.analytics.models import FLAGS
from nachtwacht.analytics.models import PERFORMANCE as PERFORMANCE
from nachtwacht.analytics.models import SECURITY_LOGGING as SECURITY_LOGGING
from nachtwacht.auth import audit as auth_audit
from nachtwacht.problems import Kind, Problem
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store, StoreError

log = logging.getLogger(__name__)

DEFAULT_TTL = 5.0


class FlagError(Problem):
    """A flag that does not exist or a value it cannot take; the field is `name` unless said."""

    def __init__(self, message: str, field: str | None = "name", kind: Kind | None = None) -> None:
        super().__init__(message, field, kind)


def check_name(name: str) -> str:
    if name not in FLAGS:
        raise FlagError(
            f"unknown flag '{name}'; known flags: {', '.join(sorted(FLAGS))}", kind="not_found"
        )
    return name


def read_flags(conn: Connection) -> dict[str, bool]:
    """Every known flag's value; a flag never set is off."""
    stored = {
        row.name: bool(row.enabled)
        for row in conn.execute(select(t.flags.c.name, t.flags.c.enabled))
    }
    return {name: stored.get(name, False) for name in FLAGS}


def list_flags(conn: Connection) -> list[dict[str, Any]]:
    rows = {row["name"]: row for row in conn.execute(select(t.flags)).mappings()}
    out = []
    for name, description in FLAGS.items():
        row = rows.get(name)
        out.append(
            {
                "name": name,
                "enabled": bool(row["enabled"]) if row else False,
                "description": description,
                "updated_at": row["updated_at"] if row else None,
                "updated_by": row["updated_by"] if row else None,
            }
        )
    return out


def set_flag(
    conn: Connection,
    name: str,
    enabled: bool,
    actor: str,
    now: float,
    ip: str | None = None,
) -> dict[str, Any]:
    """Switch a flag and write who did it to the audit log (also when nothing changed)."""
    check_name(name)
    f = t.flags.c
    row = conn.execute(select(f.enabled).where(f.name == name)).first()
    was = bool(row[0]) if row is not None else False
    values = {"enabled": enabled, "updated_at": now, "updated_by": actor[:120]}
    if row is None:
        conn.execute(t.flags.insert().values(name=name, **values))
    else:
        conn.execute(update(t.flags).where(f.name == name).values(**values))
    auth_audit.audit(conn, actor, "flag.set", name, {"enabled": enabled, "was": was}, ip, now)
    # this process sees the change at once (after commit: the next read reloads)
    invalidate()
    return next(item for item in list_flags(conn) if item["name"] == name)


def parse_switch(value: str) -> bool:
    text = value.strip().lower()
    if text in ("on", "true", "1", "yes", "enable", "enabled"):
        return True
    if text in ("off", "false", "0", "no", "disable", "disabled"):
        return False
    raise FlagError(f"'{value}' is neither on nor off", field="enabled")


# ---------------------------------------------------------------------------- the cache

_lock = threading.Lock()
_cache: dict[str, tuple[float, dict[str, bool]]] = {}  # store url -> (read at, flags)


def invalidate() -> None:
    with _lock:
        _cache.clear()


def _cached(store: Store, ttl: float) -> dict[str, bool] | None:
    """The flags read less than `ttl` seconds ago, if any."""
    with _lock:
        entry = _cache.get(store.url)
    if entry is not None and time.monotonic() - entry[0] < ttl:
        return entry[1]
    return None


def current(store: Store, ttl: float = DEFAULT_TTL) -> dict[str, bool]:
    """The flags, from the in-process cache or the store (blocking: call off the event loop).

    The cache expires by the monotonic clock, not the engine's Clock: it is about how stale a
    process may be in real time. When the store cannot be read, the last values read are kept
    (and all off before the first read): a store outage must not switch analytics or security
    logging behind anyone's back.
    """
    found = _cached(store, ttl)
    if found is not None:
        return found
    try:
        with store.connect() as conn:
            found = read_flags(conn)
    except StoreError as exc:
        log.warning("cannot read flags, keeping the last known values: %s", exc)
        with _lock:
            stale = _cache.get(store.url)
        return stale[1] if stale else dict.fromkeys(FLAGS, False)
    with _lock:
        _cache[store.url] = (time.monotonic(), found)
    return found


def enabled(store: Store, name: str, ttl: float = DEFAULT_TTL) -> bool:
    return current(store, ttl)[check_name(name)]


async def enabled_async(store: Store, name: str, ttl: float = DEFAULT_TTL) -> bool:
    """For the event loop: a cache hit answers inline, a miss reads the store in a thread."""
    found = _cached(store, ttl)
    if found is not None:
        return found[check_name(name)]
    return await asyncio.to_thread(enabled, store, name, ttl)


def ttl_of(settings: Any) -> float:
    analytics = getattr(settings, "analytics", None)
    return float(getattr(analytics, "flag_cache", DEFAULT_TTL))
