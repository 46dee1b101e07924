"""Planning a sender's round: which due outbox rows to claim now, and which the rate limit holds.

- Pages (first pages, repeats, escalation steps) are claimed before everything else, S1
  first, then test messages, then the rest (updates, notices, reminders).
- Per destination (channel and address; the channel alone for broadcast channels) at most
  `rate_limit_per_minute` messages other than pages start in any rolling minute, and at most
  `page_rate_limit_per_minute` pages: each kind has its own budget (as GoAlert's per-contact
  limits), so no update, notice or test ever holds a page, and a burst of pages cannot starve
  the test that proves alerting works. The rest wait (their `next_attempt_at` moves), none is
  dropped. A sent row's `next_attempt_at` is the time it was sent, so the limiter reads recent
  sends through the (status, next_attempt_at) index.

The plan only reads; notify/claim.py then claims what it chose (store/claims.py).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, case, func, or_, select

from nachtwacht.config.schema import Settings
from nachtwacht.notify.outbox import PAGES
from nachtwacht.store import claims
from nachtwacht.store import tables as t

WINDOW = 60.0  # the rate limit's rolling window
o = t.outbox.c
i = t.incidents.c

Destination = tuple[str, str, str | None]  # (budget, channel, address)
# a destination's rows waiting for a later time: (place in the queue, when)
Waiting = dict[Destination, list[tuple[tuple[int, float, int], float]]]

# claim order: pages, then tests, then the rest; S1 first, a row of no incident last
LANE_ORDER = case((o.kind.in_(PAGES), 0), (o.kind == "test", 1), else_=2)
SEVERITY = func.coalesce(i.severity, 9).label("severity")
WITH_INCIDENT = t.outbox.outerjoin(t.incidents, i.id == o.incident_id)


def lane(kind: str) -> str:
    """Which rate-limit budget a message uses: pages, tests, or the rest."""
    if kind in PAGES:
        return "page"
    return "test" if kind == "test" else "other"


def destination(kind: str, channel: str, address: str | None) -> Destination:
    # each lane has its own budget per destination: an update never takes a page's slot
    return (lane(kind), channel, address)


def limit(settings: Settings, kind: str) -> int:
    notify = settings.notify
    if lane(kind) == "page":
        return notify.page_limit
    return notify.rate_limit_per_minute


def due(now: float) -> Any:
    """Rows a sender may claim: due pending rows, and rows whose sender's lease ran out."""
    return or_(
        and_(o.status == "pending", o.next_attempt_at <= now),
        and_(o.status == "sending", claims.lease_expired(t.outbox, now)),
    )


@dataclass
class Held:
    """A due row the rate limit holds back, and why; for the incident's timeline."""

    incident_id: int | None
    kind: str
    channel: str
    contact: str | None
    limit: int


@dataclass
class Plan:
    chosen: dict[int, str] = field(default_factory=dict)  # row id → channel
    deferred: dict[int, float] = field(default_factory=dict)  # row id → new next_attempt_at
    held: dict[int, Held] = field(default_factory=dict)  # row id → what is deferred
    more: bool = False  # due rows were left for lack of capacity


def plan(
    conn: Connection,
    settings: Settings,
    now: float,
    capacity: int,
    busy: list[int],
    only: Collection[int] | None,
    batch: int,
) -> Plan:
    """Read the due rows and decide, by the rate limits, which to claim and which to defer.

    Within a budget rows go in order of severity, then of queueing (FIFO). A deferred row
    is given the time its turn really comes, counting the rows held for that destination
    before it: so it is not handled again (nor announced again) each time a slot opens
    and a newer row takes it.
    """
    query = (
        select(
            o.id,
            o.channel,
            o.address,
            o.kind,
            o.created_at,
            SEVERITY,
            o.status,
            o.incident_id,
            o.contact,
        )
        .select_from(WITH_INCIDENT)
        .where(due(now))
        # pages first, S1 before S2 before S3: within the batch and for the free capacity
        .order_by(LANE_ORDER, SEVERITY, o.created_at, o.id)
        .limit(batch)
    )
    if only is not None:
        query = query.where(o.id.in_(list(only)))
    if busy:
        query = query.where(o.id.not_in(busy))
    result = Plan()
    candidates = conn.execute(query).all()
    if not candidates:
        return result
    names = sorted({c.channel for c in candidates})
    recent = conn.execute(
        select(o.channel, o.address, o.kind, o.next_attempt_at).where(
            o.status.in_(("sent", "sending")),
            o.next_attempt_at > now - WINDOW,
            o.channel.in_(names),
        )
    ).all()
    window: dict[Destination, list[float]] = defaultdict(list)
    for r in recent:
        window[destination(r.kind, r.channel, r.address)].append(r.next_attempt_at)
    # rows waiting for a later time, by their place in the queue; read only when a
    # destination is full (they cannot delay a row while the minute has room)
    held: Waiting | None = None
    for c in candidates:
        dest = destination(c.kind, c.channel, c.address)
        most = limit(settings, c.kind)
        if sum(1 for x in window[dest] if x > now - WINDOW) < most:
            if len(result.chosen) >= capacity:
                result.more = True
                continue
            result.chosen[c.id] = c.channel
            window[dest].append(now)
            continue
        if c.status != "pending":
            continue  # a lease that ran out: taken again when there is room
        if held is None:
            held = waiting(conn, now, names)
        place = (c.severity, c.created_at, c.id)
        ahead = [at for before, at in held[dest] if before < place]
        when = slot(now, window[dest], ahead, most)
        result.deferred[c.id] = when
        result.held[c.id] = Held(c.incident_id, c.kind, c.channel, c.contact, most)
        held[dest].append((place, when))
    return result


def waiting(conn: Connection, now: float, names: list[str]) -> Waiting:
    """Pending rows due later (held, or waiting to retry), by destination and queue place."""
    rows = conn.execute(
        select(o.id, o.channel, o.address, o.kind, o.created_at, o.next_attempt_at, SEVERITY)
        .select_from(WITH_INCIDENT)
        .where(o.status == "pending", o.next_attempt_at > now, o.channel.in_(names))
    ).all()
    held: Waiting = defaultdict(list)
    for r in rows:
        place = (r.severity, r.created_at, r.id)
        held[destination(r.kind, r.channel, r.address)].append((place, r.next_attempt_at))
    return held


def slot(now: float, sent: list[float], ahead: list[float], limit: int) -> float:
    """The first time from `now` when a message may start at a destination.

    `sent` are its recent starts, `ahead` the times of the messages queued before this one;
    it may start when fewer than `limit` of those fall in the minute up to that time.
    """
    items = sorted([*sent, *ahead])
    for at in sorted({now, *(x + WINDOW for x in items), *ahead}):
        if at < now:
            continue
        if bisect_right(items, at) - bisect_right(items, at - WINDOW) < limit:
            return at
    return (items[-1] if items else now) + WINDOW  # the minute after the last one is empty
