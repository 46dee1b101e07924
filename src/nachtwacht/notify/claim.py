"""Claiming the rows a plan chose (store/claims.py), and holding back the ones it deferred.

A row is claimed with a conditional UPDATE (`WHERE id = ? AND <still due>`), so two senders
on one store never both own it; the claim is a lease (`claimed_until`). A sender killed
mid-send leaves its rows in `sending`; any sender takes them again once the lease passes.

A message an acknowledgement or resolution made untrue is not sent: the ack or resolve
cancels the queued rows in its own transaction (notify/outbox.withdraw), and the claim checks
the incident again for rows claimed in the race; those become `cancelled` too.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from nachtwacht.clock import iso
from nachtwacht.config.schema import Settings
from nachtwacht.incidents.models import OPEN_STATUSES
from nachtwacht.notify.compose import fit, label
from nachtwacht.notify.outbox import STALE_ON_ACK, STALE_ON_RESOLVE, OutcomeListener
from nachtwacht.notify.outcome import local, report
from nachtwacht.notify.plan import WINDOW, WITH_INCIDENT, Held, Plan, due, lane
from nachtwacht.store import claims
from nachtwacht.store import tables as t

log = logging.getLogger(__name__)
o = t.outbox.c
i = t.incidents.c


@dataclass(frozen=True)
class Claimer:
    """Who claims (the sender's instance), for how long per channel, and who hears of it."""

    settings: Settings
    owner: str
    lease_for: Callable[[str], float]
    listener: OutcomeListener | None
    # the channels of the rows `take` deferred, for the sender to count once committed
    deferred: list[str] = field(default_factory=list)

    def take(self, conn: Connection, now: float, plan: Plan) -> list[dict[str, Any]]:
        """Claim the chosen rows with a conditional update each; return the rows we got."""
        if not plan.chosen and not plan.deferred:
            return []
        # in id order, so two senders on PostgreSQL/MariaDB lock rows in the same order
        moved = claims.claim_batch(
            conn,
            t.outbox,
            {row_id: {"next_attempt_at": until} for row_id, until in plan.deferred.items()},
            o.status == "pending",
            o.next_attempt_at <= now,
        )
        self.note_deferred(conn, now, {k: (plan.deferred[k], plan.held[k]) for k in moved})
        self.deferred.extend(plan.held[k].channel for k in moved)
        claimed = claims.claim_batch(
            conn,
            t.outbox,
            {
                row_id: {"status": "sending", "attempts": o.attempts + 1, "next_attempt_at": now}
                for row_id in plan.chosen
            },
            due(now),
            leases={
                row_id: claims.Lease.of(self.owner, now, self.lease_for(channel))
                for row_id, channel in plan.chosen.items()
            },
        )
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
                .select_from(WITH_INCIDENT)
                .where(o.id.in_(claimed))
                .order_by(o.id)
            )
            rows = [dict(r) for r in conn.execute(query).mappings()]
            rows = self.drop_untrue(conn, rows, now)
        if plan.deferred:
            log.info("rate limit: %d notifications deferred", len(plan.deferred))
        return rows

    def note_deferred(
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
            most = items[0][2].limit
            budget = (
                f"{most} pages a minute per destination"
                if which == "page"
                else f"{most} messages a minute per destination; pages are not held by it"
            )
            what = "; ".join(
                f"{label(h.kind)} {to(h.channel, h.contact)} until {local(self.settings, until)}"
                for _, until, h in items
            )
            report(
                self.listener,
                conn,
                now,
                incident_id,
                "notification_deferred",
                f"held by the rate limit ({budget}): {what}",
                {"held": {str(r): u for r, u, _ in items}, "limit": most, "lane": which},
            )

    def drop_untrue(
        self, conn: Connection, rows: list[dict[str, Any]], now: float
    ) -> list[dict[str, Any]]:
        """Cancel claimed rows an ack or resolution made untrue since they were queued.

        The ack or resolve cancels what is pending in its own transaction; this catches a row
        a sender had already read as due (or a lease that ran out) while that committed.
        """
        keep = []
        for row in rows:
            inc = {k[4:]: row.pop(k) for k in list(row) if k.startswith("inc_")}
            why = untrue(row, inc) if row["incident_id"] is not None else None
            if why is None:
                if row["incident_id"] is not None:
                    self.note_ack(row, inc)
                keep.append(row)
                continue
            if not claims.release(
                conn,
                t.outbox,
                row["id"],
                self.owner,
                o.status == "sending",
                values={"status": "cancelled", "last_error": f"withdrawn: {why}"},
            ):
                continue
            report(
                self.listener,
                conn,
                now,
                row["incident_id"],
                "notification_withdrawn",
                f"{label(row['kind'])} {to(row['channel'], row['contact'])} "
                f"withdrawn before sending: {why}",
                {"outbox_ids": [row["id"]], "kinds": {row["kind"]: 1}, "reason": why},
            )
        return keep

    def note_ack(self, row: dict[str, Any], inc: dict[str, Any]) -> None:
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


def to(channel: str, contact: str | None) -> str:
    return f"to {contact} by {channel}" if contact else f"to {channel}"


def untrue(row: dict[str, Any], inc: dict[str, Any]) -> str | None:
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
