"""Recording a delivery's outcome: sent, retried later with backoff, or dead.

Failures retry after `retry_backoff * 2**(attempts-1)` (at most 10 minutes); a permanent
error or `max_attempts` failures make the row `dead`. The outcome is recorded only while the
row is still the sender's claim (store/claims.release); each outcome of a row that belongs to
an incident goes to the `on_outcome` listener (incidents puts it on the timeline) in the same
transaction as the row's new status.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from nachtwacht.clock import iso
from nachtwacht.config.schema import Settings
from nachtwacht.notify.channels import DeliveryError
from nachtwacht.notify.compose import label
from nachtwacht.notify.outbox import DeliveryOutcome, OutcomeListener
from nachtwacht.store import claims
from nachtwacht.store import tables as t

log = logging.getLogger(__name__)

MAX_BACKOFF = 600.0
o = t.outbox.c


def backoff(settings: Settings, attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed attempt."""
    base = float(settings.notify.retry_backoff)
    return min(MAX_BACKOFF, base * 2 ** max(0, attempts - 1))


def local(settings: Settings, ts: float) -> str:
    return datetime.fromtimestamp(ts, settings.zone).strftime("%H:%M:%S")


def report(
    listener: OutcomeListener | None,
    conn: Connection,
    now: float,
    incident_id: int,
    kind: str,
    text: str,
    data: dict[str, Any],
) -> None:
    if listener is not None:
        listener(conn, now, DeliveryOutcome(incident_id, kind, text, data))


@dataclass(frozen=True)
class Recorded:
    sent: bool
    text: str


def record(
    conn: Connection,
    settings: Settings,
    owner: str,
    row: dict[str, Any],
    error: DeliveryError | None,
    now: float,
    listener: OutcomeListener | None,
) -> Recorded | None:
    """Record what became of `owner`'s claimed row; None if another sender took it over."""
    attempts = row["attempts"]
    max_attempts = settings.notify.max_attempts
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
        delay = backoff(settings, attempts)
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
            text += f"; retrying at {local(settings, now + delay)}"
        data.update(
            error=str(error),
            permanent=error.permanent,
            gave_up=dead,
            next_attempt_at=None if dead else iso(now + delay),
        )
    mine = (o.status == "sending", o.attempts == attempts)
    if not claims.release(conn, t.outbox, row["id"], owner, *mine, values=values):
        # our lease ran out and another sender took the row: its outcome counts
        log.warning("outbox row %s was taken over before it was recorded", row["id"])
        return None
    if row["incident_id"] is not None:
        report(listener, conn, now, row["incident_id"], kind, text, data)
    return Recorded(error is None, text)
