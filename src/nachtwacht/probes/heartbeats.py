"""Heartbeat pings: the service functions behind `/ping/<token>` and the `heartbeat` probe.

A job reports `success` (`/ping/<token>`), `start` (`/ping/<token>/start`) or `fail`
(`/ping/<token>/fail`); each ping is one row of `heartbeat_pings`. The web router writes
pings, the probe reads them: both call these functions with a connection from `Store`.
"""

from __future__ import annotations

import re
from typing import Literal

from sqlalchemy import Connection, select

from nachtwacht.store import tables as t
from nachtwacht.store.db import meta_key

Event = Literal["success", "start", "fail"]
EVENTS: tuple[Event, ...] = ("success", "start", "fail")
TOKEN_PATTERN = r"^[A-Za-z0-9_-]{8,128}$"
TOKEN_RE = re.compile(TOKEN_PATTERN)
MAX_BODY_BYTES = 10 * 1024
_REMOTE_ADDR_LEN = 64  # the width of heartbeat_pings.remote_addr


def valid_token(token: str) -> bool:
    return TOKEN_RE.fullmatch(token) is not None


def trim_body(body: bytes | str | None) -> str | None:
    """At most MAX_BODY_BYTES of UTF-8; a character cut in half at the end is dropped."""
    if body is None:
        return None
    raw = body.encode("utf-8", "replace") if isinstance(body, str) else body
    if len(raw) > MAX_BODY_BYTES:
        return raw[:MAX_BODY_BYTES].decode("utf-8", "ignore")
    return raw.decode("utf-8", "replace")


def record_ping(
    conn: Connection,
    token: str,
    event: Event,
    ts: float,
    body: bytes | str | None = None,
    remote_addr: str | None = None,
) -> None:
    """Insert one ping. The caller's transaction decides when it is durable."""
    if event not in EVENTS:
        raise ValueError(f"unknown heartbeat event '{event}'; expected one of {', '.join(EVENTS)}")
    conn.execute(
        t.heartbeat_pings.insert().values(
            token=token,
            ts=ts,
            event=event,
            body=trim_body(body) or None,
            remote_addr=remote_addr[:_REMOTE_ADDR_LEN] if remote_addr else None,
        )
    )


def last_events(conn: Connection, token: str) -> dict[str, float]:
    """The newest ts of each event kind that can still affect the state, e.g. {"success": ts}.

    A `start` or `fail` older than the newest `success` is left out: it no longer matters, and
    bounding those two look-ups by the success time keeps each one a short range scan of the
    (token, ts) index instead of a walk over a year of minute-by-minute success pings.
    """
    out: dict[str, float] = {}
    success = _newest(conn, token, "success", None)
    if success is not None:
        out["success"] = success
    for event in ("start", "fail"):
        ts = _newest(conn, token, event, success)
        if ts is not None:
            out[event] = ts
    return out


def _newest(conn: Connection, token: str, event: str, since: float | None) -> float | None:
    c = t.heartbeat_pings.c
    query = select(c.ts).where(c.token == token, c.event == event)
    if since is not None:
        query = query.where(c.ts >= since)
    row = conn.execute(query.order_by(c.ts.desc()).limit(1)).first()
    return None if row is None else float(row[0])


def first_seen_key(token: str) -> str:
    return meta_key("heartbeat.first_seen.", token)
