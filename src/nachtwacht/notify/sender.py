"""The outbox sender: claims due rows, delivers them, and records the outcome.

Guarantees (docs/notifications.md has the long form):

- A row is claimed with a conditional UPDATE (`WHERE id = ? AND <still due>`), so two senders
  on one store never both own it; the claim is a lease (`claimed_until`). A sender killed
  mid-send leaves its rows in `sending`; any sender takes them again once the lease passes.
  That is at-least-once: the receiver dedupes by the idempotency key.
- At most `concurrency` rows are in flight per sender, so a `kill -9` can repeat at most that
  many deliveries. `close()` waits for the in-flight sends and records them: after a clean
  stop nothing is sent twice.
- Failures retry after `retry_backoff * 2**(attempts-1)` (at most 10 minutes); a permanent
  error or `max_attempts` failures make the row `dead`. Each outcome of a row that belongs to
  an incident goes to the `on_outcome` listener (incidents puts it on the timeline) in the
  same transaction as the row's new status.
- Pages (first pages, repeats, escalation steps) are claimed before everything else, S1
  first, then test messages, then the rest (updates, notices, reminders).
- Per destination (channel and address; the channel alone for broadcast channels) at most
  `rate_limit_per_minute` messages other than pages start in any rolling minute, and at most
  `page_rate_limit_per_minute` pages: each kind has its own budget (as GoAlert's per-contact
  limits), so no update, notice or test ever holds a page, and a burst of pages cannot starve
  the test that proves alerting works. The rest wait (their `next_attempt_at` moves; the
  incident's timeline says until when), none is dropped. A sent row's `next_attempt_at` is the
  time it was sent, so the limiter reads recent sends through the (status, next_attempt_at)
  index.
- A message an acknowledgement or resolution made untrue is not sent: the ack or resolve
  cancels the queued rows in its own transaction (notify/outbox.withdraw), and the claim checks
  the incident again for rows claimed in the race; those become `cancelled` too.

New work is picked up at once through `wake()`; the 1 s loop timer only serves retries.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import secrets
import socket
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import Connection, Select, and_, case, func, or_, select, update

from nachtwacht.clock import Clock, iso
from nachtwacht.config.schema import Settings
from nachtwacht.incidents.models import OPEN_STATUSES
from nachtwacht.notify import channels
from nachtwacht.notify.channels import DeliveryError
from nachtwacht.notify.compose import BROADCAST, compose, fit, label
from nachtwacht.notify.outbox import (
    PAGES,
    STALE_ON_ACK,
    STALE_ON_RESOLVE,
    DeliveryOutcome,
    OutcomeListener,
    enqueue,
)
from nachtwacht.store import paging
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store, StoreError

log = logging.getLogger(__name__)

STATUSES = ("pending", "sending", "sent", "dead", "cancelled")
DONE = ("sent", "dead", "cancelled")  # a row in one of these is never sent (again)
MAX_BACKOFF = 600.0
WINDOW = 60.0  # the rate limit's rolling window
o = t.outbox.c
i = t.incidents.c


def lane(kind: str) -> str:
    """Which rate-limit budget a message uses: pages, tests, or the rest."""
    if kind in PAGES:
        return "page"
    return "test" if kind == "test" else "other"


Destination = tuple[str, str, str | None]  # (budget, channel, address)

# claim order: pages, then tests, then the rest; S1 first, a row of no incident last
_LANE_ORDER = case((o.kind.in_(PAGES), 0), (o.kind == "test", 1), else_=2)
_SEVERITY = func.coalesce(i.severity, 9).label("severity")
_WITH_INCIDENT = t.outbox.outerjoin(t.incidents, i.id == o.incident_id)


def backoff(settings: Settings, attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed attempt."""
    base = float(settings.notify.retry_backoff)
    return min(MAX_BACKOFF, base * 2 ** max(0, attempts - 1))


def _due(now: float) -> Any:
    """Rows a sender may claim: due pending rows, and rows whose sender's lease ran out."""
    return or_(
        and_(o.status == "pending", o.next_attempt_at <= now),
        and_(o.status == "sending", o.claimed_until < now),
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


class OutboxSender:
    # how long the loop sleeps when nothing wakes it: the bound on a retry's or a deferred
    # row's lateness; new rows do not wait for it (wake()). Tests raise it to prove that.
    idle_wait = 1.0

    def __init__(
        self,
        store: Store,
        settings: Settings,
        clock: Clock,
        instance: str | None = None,
        *,
        concurrency: int = 8,
        lease: float | None = None,
        batch: int = 200,
        http: httpx.AsyncClient | None = None,
        on_outcome: OutcomeListener | None,
    ) -> None:
        self.store = store
        # No default: a sender of incident rows that forgot it would leave their timelines
        # silent. None only where no row belongs to an incident (test messages).
        self.on_outcome = on_outcome
        self.settings = settings
        self.clock = clock
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}"
        self.concurrency = max(1, concurrency)
        self.lease = lease
        self.batch = batch
        self._http = http
        self._own_http = http is None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one claim at a time, and none once closing
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._closing = False
        self._more = False  # the last claim left due rows behind for lack of capacity
        self._loop: asyncio.AbstractEventLoop | None = None
        self.last_error: str | None = None
        self.sent = 0
        self.failed = 0

    # -- waking --------------------------------------------------------------------------

    def wake(self) -> None:
        """New rows were committed: send them now. Safe to call from any thread."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop:
            self._wake.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    # -- one round -----------------------------------------------------------------------

    async def tick(
        self, now: float, *, wait: bool = True, only: Collection[int] | None = None
    ) -> int:
        """Claim due rows (up to the free concurrency) and start sending them.

        With `wait` (the default) return once they are sent and marked; the loop passes
        `wait=False` so one slow receiver does not hold back the next page. `only` restricts
        the round to those row ids. Returns the number of rows claimed.
        """
        async with self._lock:
            if self._closing:
                return 0
            capacity = self.concurrency - len(self._inflight)
            if capacity <= 0:
                self._more = True
                return 0
            busy = list(self._inflight)
            rows, more = await asyncio.to_thread(self._claim, now, capacity, busy, only)
            self._more = more
            tasks = [self._start(row) for row in rows]
        if wait and tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        return len(tasks)

    def _lease_for(self, channel: str) -> float:
        if self.lease is not None:
            return self.lease
        cfg = self.settings.notify.channels.get(channel)
        timeout = float(getattr(cfg, "timeout", 10.0))
        # an SMTP session is several round trips, each with the timeout; keep a wide margin
        return max(60.0, 4 * timeout + 10)

    def _claim(
        self, now: float, capacity: int, busy: list[int], only: Collection[int] | None
    ) -> tuple[list[dict[str, Any]], bool]:
        plan = self._plan(now, capacity, busy, only)
        return self._take(now, plan), plan.more

    def _plan(
        self, now: float, capacity: int, busy: list[int], only: Collection[int] | None = None
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
                _SEVERITY,
                o.status,
                o.incident_id,
                o.contact,
            )
            .select_from(_WITH_INCIDENT)
            .where(_due(now))
            # pages first, S1 before S2 before S3: within the batch and for the free capacity
            .order_by(_LANE_ORDER, _SEVERITY, o.created_at, o.id)
            .limit(self.batch)
        )
        if only is not None:
            query = query.where(o.id.in_(list(only)))
        if busy:
            query = query.where(o.id.not_in(busy))
        plan = Plan()
        with self.store.connect() as conn:
            candidates = conn.execute(query).all()
            if not candidates:
                return plan
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
                window[self._destination(r.kind, r.channel, r.address)].append(r.next_attempt_at)
            # rows waiting for a later time, by their place in the queue; read only when a
            # destination is full (they cannot delay a row while the minute has room)
            held: dict[Destination, list[tuple[tuple[int, float, int], float]]] | None = None
            for c in candidates:
                dest = self._destination(c.kind, c.channel, c.address)
                limit = self._limit(c.kind)
                if sum(1 for x in window[dest] if x > now - WINDOW) < limit:
                    if len(plan.chosen) >= capacity:
                        plan.more = True
                        continue
                    plan.chosen[c.id] = c.channel
                    window[dest].append(now)
                    continue
                if c.status != "pending":
                    continue  # a lease that ran out: taken again when there is room
                if held is None:
                    held = self._waiting(conn, now, names)
                place = (c.severity, c.created_at, c.id)
                ahead = [at for before, at in held[dest] if before < place]
                slot = _slot(now, window[dest], ahead, limit)
                plan.deferred[c.id] = slot
                plan.held[c.id] = Held(c.incident_id, c.kind, c.channel, c.contact, limit)
                held[dest].append((place, slot))
        return plan

    def _waiting(
        self, conn: Connection, now: float, names: list[str]
    ) -> dict[Destination, list[tuple[tuple[int, float, int], float]]]:
        """Pending rows due later (held, or waiting to retry), by destination and queue place."""
        rows = conn.execute(
            select(o.id, o.channel, o.address, o.kind, o.created_at, o.next_attempt_at, _SEVERITY)
            .select_from(_WITH_INCIDENT)
            .where(o.status == "pending", o.next_attempt_at > now, o.channel.in_(names))
        ).all()
        held: dict[Destination, list[tuple[tuple[int, float, int], float]]] = defaultdict(list)
        for r in rows:
            place = (r.severity, r.created_at, r.id)
            held[self._destination(r.kind, r.channel, r.address)].append((place, r.next_attempt_at))
        return held

    def _take(self, now: float, plan: Plan) -> list[dict[str, Any]]:
        """Claim the chosen rows with a conditional update each; return the rows we got."""
        if not plan.chosen and not plan.deferred:
            return []
        claimed: list[int] = []
        with self.store.begin() as conn:
            deferred: dict[int, float] = {}
            # in id order, so two senders on PostgreSQL/MariaDB lock rows in the same order
            for row_id, until in sorted(plan.deferred.items()):
                got = conn.execute(
                    update(t.outbox)
                    .where(o.id == row_id, o.status == "pending", o.next_attempt_at <= now)
                    .values(next_attempt_at=until)
                ).rowcount
                if got == 1:
                    deferred[row_id] = until
            self._note_deferred(conn, now, {k: (v, plan.held[k]) for k, v in deferred.items()})
            for row_id, channel in sorted(plan.chosen.items()):
                got = conn.execute(
                    update(t.outbox)
                    .where(o.id == row_id, _due(now))
                    .values(
                        status="sending",
                        claimed_by=self.instance,
                        claimed_until=now + self._lease_for(channel),
                        attempts=o.attempts + 1,
                        next_attempt_at=now,
                    )
                ).rowcount
                if got == 1:
                    claimed.append(row_id)
            rows = []
            if claimed:
                # with the incident as it is now, to catch what an ack or resolve made untrue
                query = (
                    select(
                        t.outbox,
                        i.status.label("inc_status"),
                        i.acknowledged_at.label("inc_acknowledged_at"),
                        i.acknowledged_by.label("inc_acknowledged_by"),
                        i.resolved_at.label("inc_resolved_at"),
                    )
                    .select_from(_WITH_INCIDENT)
                    .where(o.id.in_(claimed))
                    .order_by(o.id)
                )
                rows = [dict(r) for r in conn.execute(query).mappings()]
                rows = self._drop_untrue(conn, rows, now)
        if plan.deferred:
            log.info("rate limit: %d notifications deferred", len(plan.deferred))
        return rows

    def _limit(self, kind: str) -> int:
        notify = self.settings.notify
        if lane(kind) == "page":
            return notify.page_limit
        return notify.rate_limit_per_minute

    @staticmethod
    def _destination(kind: str, channel: str, address: str | None) -> Destination:
        # each lane has its own budget per destination: an update never takes a page's slot
        return (lane(kind), channel, address)

    def _note_deferred(
        self, conn: Connection, now: float, deferred: dict[int, tuple[float, Held]]
    ) -> None:
        """Report held messages for their incident's timeline: when first held, or held much longer.

        A row the limiter holds again when its slot comes (others took it) is not written
        again unless its time moved by more than the window: one line per real delay.
        """
        mine = {k: v for k, v in deferred.items() if v[1].incident_id is not None}
        if not mine:
            return
        incidents = sorted({h.incident_id for _, h in mine.values() if h.incident_id is not None})
        told: dict[int, float] = {}
        e = t.incident_events.c
        for raw in conn.execute(
            select(e.data_json).where(
                e.incident_id.in_(incidents), e.kind == "notification_deferred"
            )
        ).scalars():
            for key, until in (json.loads(raw or "{}").get("held") or {}).items():
                told[int(key)] = max(told.get(int(key), 0.0), float(until))
        groups: dict[tuple[int, str], list[tuple[int, float, Held]]] = defaultdict(list)
        for row_id, (until, held) in sorted(mine.items()):
            if held.incident_id is None or (row_id in told and until <= told[row_id] + WINDOW):
                continue
            groups[(held.incident_id, lane(held.kind))].append((row_id, until, held))
        for (incident_id, which), items in sorted(groups.items()):
            limit = items[0][2].limit
            budget = (
                f"{limit} pages a minute per destination"
                if which == "page"
                else f"{limit} messages a minute per destination; pages are not held by it"
            )
            what = "; ".join(
                f"{label(h.kind)} {self._to(h.channel, h.contact)} until {self._local(until)}"
                for _, until, h in items
            )
            self._report(
                conn,
                now,
                incident_id,
                "notification_deferred",
                f"held by the rate limit ({budget}): {what}",
                {"held": {str(r): u for r, u, _ in items}, "limit": limit, "lane": which},
            )

    @staticmethod
    def _to(channel: str, contact: str | None) -> str:
        return f"to {contact} by {channel}" if contact else f"to {channel}"

    def _drop_untrue(
        self, conn: Connection, rows: list[dict[str, Any]], now: float
    ) -> list[dict[str, Any]]:
        """Cancel claimed rows an ack or resolution made untrue since they were queued.

        The ack or resolve cancels what is pending in its own transaction; this catches a row
        a sender had already read as due (or a lease that ran out) while that committed.
        """
        keep = []
        for row in rows:
            inc = {k[4:]: row.pop(k) for k in list(row) if k.startswith("inc_")}
            why = _untrue(row, inc) if row["incident_id"] is not None else None
            if why is None:
                if row["incident_id"] is not None:
                    self._note_ack(row, inc)
                keep.append(row)
                continue
            got = conn.execute(
                update(t.outbox)
                .where(o.id == row["id"], o.status == "sending", o.claimed_by == self.instance)
                .values(status="cancelled", claimed_until=None, last_error=f"withdrawn: {why}")
            ).rowcount
            if got != 1:
                continue
            self._report(
                conn,
                now,
                row["incident_id"],
                "notification_withdrawn",
                f"{label(row['kind'])} {self._to(row['channel'], row['contact'])} "
                f"withdrawn before sending: {why}",
                {"outbox_ids": [row["id"]], "kinds": {row["kind"]: 1}, "reason": why},
            )
        return keep

    def _note_ack(self, row: dict[str, Any], inc: dict[str, Any]) -> None:
        """An escalation step written before the ack still goes (it is how its people learn of
        the incident), saying first that someone has it now, so nothing in it is untrue."""
        if row["kind"] != "emergency_notification" or inc.get("acknowledged_at") is None:
            return
        payload = json.loads(row["payload_json"]) if row.get("payload_json") else {}
        if payload.get("acknowledged_at") is not None:
            return  # written after the ack: it says so already
        when = datetime.fromtimestamp(inc["acknowledged_at"], self.settings.zone)
        note = (
            f"Acknowledged by {inc['acknowledged_by']} at {when:%H:%M %Z}, after this was written."
        )
        cfg = self.settings.notify.channels.get(row["channel"])
        body = f"{note}\n\n{row['body']}"
        if cfg is not None and cfg.kind == "sms":
            body = fit(f"{note} {row['body']}", None, cfg.max_length)
        row["body"] = body
        payload.update(
            acknowledged_at=iso(inc["acknowledged_at"]), acknowledged_by=inc["acknowledged_by"]
        )
        row["payload_json"] = json.dumps(payload, default=str)

    # -- delivery ------------------------------------------------------------------------

    def _start(self, row: dict[str, Any]) -> asyncio.Task[None]:
        task = asyncio.create_task(self._deliver(row), name=f"outbox-{row['id']}")
        self._inflight[row["id"]] = task

        def done(_task: asyncio.Task[None], row_id: int = row["id"]) -> None:
            self._inflight.pop(row_id, None)
            if self._more:
                self._wake.set()

        task.add_done_callback(done)
        return task

    def client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(follow_redirects=False)
        return self._http

    def _message(self, row: dict[str, Any], now: float) -> dict[str, Any]:
        contact = self.settings.people.contact(row["contact"]) if row["contact"] else None
        return {
            "id": row["id"],
            "key": row["idempotency_key"],
            "kind": row["kind"],
            "channel": row["channel"],
            "contact": row["contact"],
            "contact_name": contact.name if contact else None,
            "address": row["address"],
            "subject": row["subject"],
            "body": row["body"],
            "payload": json.loads(row["payload_json"]) if row["payload_json"] else {},
            "incident_id": row["incident_id"],
            "attempt": row["attempts"],
            "now": now,
        }

    async def _deliver(self, row: dict[str, Any]) -> None:
        error: DeliveryError | None = None
        cfg = self.settings.notify.channels.get(row["channel"])
        budget = self._lease_for(row["channel"]) * 0.8  # finish (or give up) inside the lease
        try:
            if cfg is None:
                raise DeliveryError(
                    f"channel '{row['channel']}' is not in the config any more", permanent=True
                )
            async with asyncio.timeout(budget):
                await channels.send(cfg, self._message(row, self.clock.now()), self.client())
        except DeliveryError as exc:
            error = exc
        except TimeoutError:
            error = DeliveryError(f"{row['channel']}: gave up after {budget:g}s")
        except Exception as exc:  # a bug in a channel must not stop the others
            log.exception("channel %s failed unexpectedly", row["channel"])
            error = DeliveryError(f"{exc.__class__.__name__}: {exc}")
        try:
            await asyncio.to_thread(self._finish, row, error, self.clock.now())
        except StoreError as exc:
            # the row stays `sending`; it is retried when its lease runs out (at-least-once)
            self.last_error = str(exc)
            log.error("could not record outbox row %s: %s", row["id"], exc)

    def _finish(self, row: dict[str, Any], error: DeliveryError | None, now: float) -> None:
        attempts = row["attempts"]
        max_attempts = self.settings.notify.max_attempts
        mine = and_(
            o.id == row["id"],
            o.status == "sending",
            o.claimed_by == self.instance,
            o.attempts == attempts,
        )
        what = label(row["kind"])
        broadcast = row["contact"] is None
        who = row["contact"] or row["channel"]
        data: dict[str, Any] = {
            "outbox_id": row["id"],
            "key": row["idempotency_key"],
            "kind": row["kind"],
            "channel": row["channel"],
            "contact": row["contact"],
            "address": row["address"],
            "attempt": attempts,
        }
        with self.store.begin() as conn:
            if error is None:
                values: dict[str, Any] = {
                    "status": "sent",
                    "sent_at": now,
                    "next_attempt_at": now,
                    "claimed_until": None,
                    "last_error": None,
                }
                kind = "notification_sent"
                text = (
                    f"{what} posted to {row['channel']}"
                    if broadcast
                    else f"{what} sent to {who} by {row['channel']}"
                )
            else:
                dead = error.permanent or attempts >= max_attempts
                delay = backoff(self.settings, attempts)
                if error.retry_after is not None:
                    delay = min(MAX_BACKOFF, max(delay, error.retry_after))
                values = {
                    "status": "dead" if dead else "pending",
                    "claimed_until": None,
                    "last_error": str(error)[:2000],
                }
                if not dead:
                    values["next_attempt_at"] = now + delay
                kind = "notification_failed"
                target = f"to {row['channel']}" if broadcast else f"to {who} by {row['channel']}"
                text = f"{what} {target} failed (attempt {attempts} of {max_attempts}): {error}"
                if dead:
                    reason = "permanent error" if error.permanent else "too many attempts"
                    text += f"; gave up ({reason})"
                else:
                    text += f"; retrying at {self._local(now + delay)}"
                data.update(
                    error=str(error),
                    permanent=error.permanent,
                    gave_up=dead,
                    next_attempt_at=None if dead else iso(now + delay),
                )
            changed = conn.execute(update(t.outbox).where(mine).values(**values)).rowcount
            if changed != 1:
                # our lease ran out and another sender took the row: its outcome counts
                log.warning("outbox row %s was taken over before it was recorded", row["id"])
                return
            if row["incident_id"] is not None:
                self._report(conn, now, row["incident_id"], kind, text, data)
        if error is None:
            self.sent += 1
        else:
            self.failed += 1
            log.warning("%s", text)

    def _report(
        self,
        conn: Connection,
        now: float,
        incident_id: int,
        kind: str,
        text: str,
        data: dict[str, Any],
    ) -> None:
        if self.on_outcome is not None:
            self.on_outcome(conn, now, DeliveryOutcome(incident_id, kind, text, data))

    def _local(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, self.settings.zone).strftime("%H:%M:%S")

    # -- running -------------------------------------------------------------------------

    async def loop(self, stop: asyncio.Event) -> None:
        """Tick, then wait for `wake()`, `stop`, or `idle_wait` (retries and deferred rows)."""
        self._loop = asyncio.get_running_loop()
        self._prepare()
        try:
            await asyncio.to_thread(self.reclaim_orphans, self.clock.now())
        except Exception as exc:  # the store is down: the leases expire by themselves
            log.warning("outbox sender: cannot reclaim orphaned messages: %s", exc)
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set() and not self._closing:
                self._wake.clear()
                try:
                    await self.tick(self.clock.now(), wait=False)
                    self.last_error = None
                except Exception as exc:  # the store is down: keep trying, say so
                    self.last_error = f"{exc.__class__.__name__}: {exc}"
                    log.error("outbox sender: %s", self.last_error)
                waking = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait(
                        {waking, stopping},
                        timeout=self.idle_wait,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    waking.cancel()
        finally:
            stopping.cancel()

    def reclaim_orphans(self, now: float) -> int:
        """Messages a dead process on this host was sending are due now, not when the lease ends.

        After a kill -9 their leases (a minute or more) would delay pages by that much; the
        claiming process is known to be gone when its pid no longer runs here. A message the
        channel had accepted before the kill is sent again (at-least-once, with the same
        Idempotency-Key / Message-ID): the channel's answer was never recorded.
        """
        host = self.instance.rsplit(":", 1)[0]
        o = t.outbox.c
        with self.store.begin() as conn:
            owners = conn.execute(
                select(o.claimed_by).where(o.status == "sending").distinct()
            ).scalars()
            dead = [
                owner
                for owner in owners
                if owner
                and owner != self.instance
                and owner.rsplit(":", 1)[0] == host
                and not _pid_alive(owner.rsplit(":", 1)[1])
            ]
            if not dead:
                return 0
            return conn.execute(
                update(t.outbox)
                .where(o.status == "sending", o.claimed_by.in_(dead))
                .values(claimed_until=now - 0.001)
            ).rowcount

    def _prepare(self) -> None:
        """Pay the one-off costs now, not on the first page after a (re)start.

        Making the HTTP client loads the CA bundle (about 30 ms on a 2-core VM) and each
        channel module is imported on first use; done lazily, both landed on the first page
        after a start: 65 ms from confirmed failure to arrival, against 7 ms later on and
        about 30 ms with this (bench/alert_latency.py).
        """
        for cfg in self.settings.notify.channels.values():
            name = channels.MODULES.get(cfg.kind)
            if name is not None:
                importlib.import_module(f"{channels.__name__}.{name}")
        self.client()

    async def close(self) -> None:
        """Stop claiming, wait for the sends in flight and record them, release the client."""
        async with self._lock:
            self._closing = True
        self._wake.set()
        while self._inflight:
            await asyncio.gather(*list(self._inflight.values()), return_exceptions=True)
        if self._http is not None and self._own_http:
            await self._http.aclose()
            self._http = None

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def deliver(self, ids: Collection[int], timeout: float) -> list[dict[str, Any]]:
        """Send just these rows until each is sent or dead, or `timeout` seconds pass."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        wanted = list(ids)
        while True:
            await self.tick(self.clock.now(), only=wanted)
            rows = await asyncio.to_thread(rows_by_id, self.store, wanted)
            left = deadline - loop.time()
            if left <= 0 or all(r["status"] in DONE for r in rows):
                return rows
            await asyncio.sleep(min(0.2, left))


def _slot(now: float, sent: list[float], ahead: list[float], limit: int) -> float:
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


def _untrue(row: dict[str, Any], inc: dict[str, Any]) -> str | None:
    """Why this message is no longer true of its incident, or None.

    The payload records the incident as it was composed, so a page written after the ack
    (a later escalation step says "acknowledged by ...") stays; rows without one are judged
    by when they were queued.
    """
    payload = json.loads(row["payload_json"]) if row.get("payload_json") else {}
    kind = row["kind"]
    if kind in STALE_ON_RESOLVE and inc["status"] not in OPEN_STATUSES:
        if "status" in payload:
            was_open = payload["status"] in OPEN_STATUSES
        else:
            was_open = inc["resolved_at"] is None or row["created_at"] <= inc["resolved_at"]
        if was_open:
            return f"incident {inc['status']}"
    if (
        kind == "resolved"
        and inc["status"] in OPEN_STATUSES
        and payload.get("status") == "resolved"
    ):
        return f"incident reopened ({inc['status']})"
    if kind in STALE_ON_ACK and inc["acknowledged_at"] is not None:
        if "acknowledged_at" in payload:
            unacked = payload["acknowledged_at"] is None
        else:
            unacked = row["created_at"] <= inc["acknowledged_at"]
        if unacked:
            return f"acknowledged by {inc['acknowledged_by']}"
    return None


# -- queries and the test message, shared by the CLI and the API ---------------------------


def public_row(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "payload_json"}
    out["payload"] = json.loads(row["payload_json"]) if row.get("payload_json") else {}
    for key in ("next_attempt_at", "claimed_until", "created_at", "sent_at"):
        out[key] = iso(row.get(key))
    return out


def rows_by_id(store: Store, ids: Collection[int]) -> list[dict[str, Any]]:
    with store.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(t.outbox).where(o.id.in_(list(ids))).order_by(o.id)
            ).mappings()
        ]


def _outbox_query(status: str | None, incident_id: int | None) -> Select:
    query = select(t.outbox).order_by(o.id.desc())
    if status:
        query = query.where(o.status == status)
    if incident_id is not None:
        query = query.where(o.incident_id == incident_id)
    return query


def list_outbox(
    store: Store,
    status: str | None = None,
    limit: int | None = 100,
    incident_id: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """The newest outbox rows, optionally of one status or one incident."""
    query = paging.window(_outbox_query(status, incident_id), limit, offset)
    with store.connect() as conn:
        return [public_row(dict(r)) for r in conn.execute(query).mappings()]


def count_outbox(store: Store, status: str | None = None, incident_id: int | None = None) -> int:
    with store.connect() as conn:
        return paging.count(conn, _outbox_query(status, incident_id))


class NotifyTestError(Exception):
    def __init__(self, message: str, field: str = "contact", status_code: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.status_code = status_code


async def send_test(
    settings: Settings,
    store: Store,
    clock: Clock,
    contact_id: str,
    wait: float = 30.0,
    sender: OutboxSender | None = None,
) -> list[dict[str, Any]]:
    """Queue a `test` message to one contact on every channel that reaches them and send it.

    Returns one row per channel: channel, kind, address, status (sent | dead | pending),
    attempts, error. A row still pending after `wait` seconds is given up (made `dead`): a
    test answers now or not at all, it must not arrive an hour later.
    """
    contact = settings.people.contact(contact_id)
    if contact is None:
        known = ", ".join(c.id for c in settings.people.contacts) or "none configured"
        raise NotifyTestError(f"no contact '{contact_id}' (contacts: {known})", status_code=404)
    now = clock.now()
    key = f"test:{contact.id}:{int(now)}:{secrets.token_hex(4)}"
    messages = compose(settings, kind="test", key=key, incident=None, contacts=[contact], now=now)
    if not messages:
        raise NotifyTestError(
            f"no channel reaches '{contact.id}': give them an email or phone, "
            "or configure a webhook or chat channel"
        )

    def queue() -> list[int]:
        with store.begin() as conn:
            return enqueue(conn, messages, now)

    ids = await asyncio.to_thread(queue)
    own = sender is None
    runner = sender or OutboxSender(
        store,
        settings,
        clock,
        f"{socket.gethostname()}:{os.getpid()}:test",
        concurrency=max(1, len(ids)),
        on_outcome=None,  # test messages belong to no incident
    )
    try:
        rows = await runner.deliver(ids, wait)
    finally:
        if own:
            await runner.close()
    if any(r["status"] == "pending" for r in rows):
        rows = await asyncio.to_thread(_give_up, store, ids)
    kinds = {name: cfg.kind for name, cfg in settings.notify.channels.items()}
    return [
        {
            "channel": r["channel"],
            "kind": kinds.get(r["channel"], "?"),
            "address": r["address"]
            or ("(channel)" if kinds.get(r["channel"]) in BROADCAST else None),
            "status": r["status"],
            "attempts": r["attempts"],
            "error": r["last_error"],
        }
        for r in rows
    ]


def _give_up(store: Store, ids: list[int]) -> list[dict[str, Any]]:
    with store.begin() as conn:
        conn.execute(
            update(t.outbox)
            .where(o.id.in_(ids), o.status == "pending")
            .values(
                status="dead",
                last_error=func.coalesce(
                    o.last_error,
                    "not sent within the wait (a retry or the rate limit was due later)",
                ),
            )
        )
    return rows_by_id(store, ids)


def _pid_alive(pid: str) -> bool:
    if not pid.isdigit():
        return True  # not ours to judge: let the lease run out
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
