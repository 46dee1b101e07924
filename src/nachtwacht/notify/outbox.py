"""The persistent outbox: every notification is a row before anything is sent.

`enqueue` runs inside the caller's transaction, so a notification exists if and only if the
change that caused it was committed. The sender (notify/sender.py) claims rows with a
conditional update (notify/claim.py), sends, and marks them; the idempotency key makes a
retry after `kill -9` recognisable to the receiver (webhook header, email Message-ID).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Connection, Row, func, select, update

from nachtwacht.meter import Tally
from nachtwacht.store import tables as t
from nachtwacht.store.db import inserted_id

# the messages that page someone: sent before every other message, with their own rate limit
PAGES = ("emergency_alert", "emergency_notification")
# what an acknowledgement makes untrue: the on-call pages ("not acknowledged yet", "acknowledge:
# <link>"). An escalation step's notification to others (the technical lead, management) still
# goes: it is how they learn of the incident; the sender adds the acknowledgement to it.
STALE_ON_ACK = ("emergency_alert",)
# what a resolution makes untrue: anything saying the incident is ongoing (the resolved notice
# and the review reminders are written for a resolved incident and stay)
STALE_ON_RESOLVE = (*PAGES, "status_update", "reminder", "customer_notice")

# Messages by (channel, what became of them: queued | sent | failed | deferred), in this
# process, for /metrics. `queued` counts rows `enqueue` inserted (a transaction rolled back
# after it still counts them: rare, and a counter cannot be taken back); the others are counted
# by the sender after its transaction committed. Channels are the configured ones: bounded.
DELIVERIES = Tally()


@dataclass
class OutboundMessage:
    idempotency_key: str
    kind: str  # page | notification | update | reminder | resolved | customer_notice | test ...
    channel: str  # a channel name from notify.channels
    subject: str
    body: str
    incident_id: int | None = None
    contact: str | None = None  # None for broadcast channels (chat, webhook)
    address: str | None = None  # email address or phone number for per-contact channels
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeliveryOutcome:
    """What became of a message of an incident, for whoever keeps its record (incidents)."""

    incident_id: int
    # notification_sent | notification_failed | notification_deferred | notification_withdrawn
    kind: str
    message: str
    data: dict[str, Any]


class OutcomeListener(Protocol):
    """Called inside the transaction that records the row's new status, so the two commit
    together; the composition root hands incidents' listener to the sender, and notify never
    writes another domain's records itself."""

    def __call__(self, conn: Connection, now: float, outcome: DeliveryOutcome) -> None: ...


def enqueue(conn: Connection, messages: list[OutboundMessage], now: float) -> list[int]:
    """Insert messages not already in the outbox; return the new row ids."""
    if not messages:
        return []
    keys = [m.idempotency_key for m in messages]
    existing = set(
        conn.execute(
            select(t.outbox.c.idempotency_key).where(t.outbox.c.idempotency_key.in_(keys))
        ).scalars()
    )
    ids: list[int] = []
    for m in messages:
        if m.idempotency_key in existing:
            continue
        existing.add(m.idempotency_key)
        ids.append(
            inserted_id(
                conn.execute(
                    t.outbox.insert().values(
                        idempotency_key=m.idempotency_key[:200],
                        incident_id=m.incident_id,
                        kind=m.kind,
                        channel=m.channel,
                        contact=m.contact,
                        address=m.address,
                        subject=m.subject[:300],
                        body=m.body,
                        payload_json=json.dumps(m.payload, default=str),
                        status="pending",
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
            )
        )
        DELIVERIES.add((m.channel, "queued"))
    return ids


def withdraw(conn: Connection, incident_id: int, kinds: tuple[str, ...], reason: str) -> list[Row]:
    """Cancel the incident's queued messages of these kinds; return the rows cancelled.

    Only `pending` rows: one a sender has claimed may be with the channel already and is not
    recalled (the sender checks the incident again when it claims, see notify/claim.py).
    Each row is cancelled by a conditional UPDATE, in the caller's transaction.
    """
    o = t.outbox.c
    rows = conn.execute(
        select(o.id, o.kind, o.channel, o.contact)
        .where(o.incident_id == incident_id, o.status == "pending", o.kind.in_(kinds))
        .order_by(o.id)
    ).all()
    done = []
    for row in rows:
        got = conn.execute(
            update(t.outbox)
            .where(o.id == row.id, o.status == "pending")
            .values(status="cancelled", claimed_until=None, last_error=reason[:2000])
        ).rowcount
        if got == 1:
            done.append(row)
    return done


def count_for_incident(conn: Connection, incident_id: int) -> int:
    """How many messages an incident has put in the outbox, in any state."""
    return int(
        conn.execute(
            select(func.count()).select_from(t.outbox).where(t.outbox.c.incident_id == incident_id)
        ).scalar_one()
    )


def give_up(conn: Connection, ids: list[int], reason: str) -> None:
    """Messages still pending are dead now (`reason` unless they already carry an error)."""
    o = t.outbox.c
    conn.execute(
        update(t.outbox)
        .where(o.id.in_(ids), o.status == "pending")
        .values(status="dead", last_error=func.coalesce(o.last_error, reason))
    )
