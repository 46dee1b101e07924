"""Incident lifecycle and timeline: plain functions taking a Connection and `now`.

Every change writes a timeline event in the same transaction, so the timeline is the record
the post-incident review reads: detection, notifications, acknowledgement, status updates,
severity changes, escalation steps, notes and resolution, each with its time and actor.

Why one module of some 430 lines: every change here writes its timeline event in the same
transaction, so the lifecycle and the timeline are one thing; `add_event` is the door ten
modules in other domains write the timeline through, and moving its 30-odd lines out would
only re-point them all.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from datetime import datetime, tzinfo
from typing import Any

from sqlalchemy import Connection, Select, func, select, update

from nachtwacht.config import limits
from nachtwacht.config.schema import Settings
from nachtwacht.incidents.models import OPEN_STATUSES, STATUSES, is_severity
from nachtwacht.incidents.sla import BusinessCalendar, response_due
from nachtwacht.notify.compose import label
from nachtwacht.notify.outbox import PAGES, STALE_ON_ACK, DeliveryOutcome, withdraw
from nachtwacht.problems import Kind, Problem
from nachtwacht.store import paging
from nachtwacht.store import tables as t
from nachtwacht.store.db import inserted_id


class IncidentError(Problem):
    """A request that cannot be done to this incident; `field` names the culprit.

    Most refusals are about the incident's state (resolved, already acknowledged): a conflict.
    """

    kind: Kind = "conflict"


def check_length(value: str | None, field: str, limit: int = limits.TEXT) -> None:
    """Refuse a text longer than a person writes: one check for the API, dashboard and CLI
    (a 50 MB impact was stored, paged and rendered into a 262 MB incident page)."""
    if value is not None and len(value) > limit:
        raise IncidentError(limits.too_long(field, limit), field, kind="invalid")


def calendar(settings: Settings) -> BusinessCalendar:
    return BusinessCalendar(settings.business_hours, settings.zone)


def add_event(
    conn: Connection,
    incident_id: int,
    ts: float,
    kind: str,
    actor: str,
    message: str,
    data: dict[str, Any] | None = None,
) -> None:
    conn.execute(
        t.incident_events.insert().values(
            incident_id=incident_id,
            ts=ts,
            kind=kind,
            actor=actor,
            message=message,
            data_json=json.dumps(data, default=str) if data else None,
        )
    )


def record_delivery(conn: Connection, now: float, outcome: DeliveryOutcome) -> None:
    """The outbox sender's `on_outcome`: each delivery outcome goes on the incident's timeline."""
    add_event(
        conn, outcome.incident_id, now, outcome.kind, "nachtwacht", outcome.message, outcome.data
    )


def open_incident(
    conn: Connection,
    settings: Settings,
    *,
    title: str,
    severity: int,
    now: float,
    component: str | None = None,
    origin: str = "alert",
    started_at: float | None = None,
    detected_at: float | None = None,
    impact: str | None = None,
    actor: str = "nachtwacht",
    muted: bool = False,
    commander: str | None = None,
    drill_id: int | None = None,
) -> int:
    if not is_severity(severity):
        raise IncidentError("severity must be 1, 2 or 3", "severity", kind="invalid")
    if origin == "declared":  # a person's words: refused when too long
        check_length(title, "title", limits.TITLE)
        check_length(component, "component", limits.NAME)
        check_length(impact, "impact")
    elif impact is not None:  # an alert's message: cut, an alert must open its incident
        impact = impact[: limits.TEXT]
    detected = detected_at if detected_at is not None else now
    policy_name, _policy = settings.incidents.policy_for(severity)
    due = response_due(severity, detected, calendar(settings))
    incident_id = inserted_id(
        conn.execute(
            t.incidents.insert().values(
                title=title[:300],
                severity=severity,
                status="investigating",
                component=component,
                origin=origin,
                commander=commander,
                impact=impact,
                started_at=started_at if started_at is not None else detected,
                detected_at=detected,
                response_due_at=due,
                policy=policy_name,
                next_step=0,
                next_step_at=detected,
                pages_sent=0,
                update_due_at=detected + settings.incidents.update_every[severity],
                paged=False,
                muted=muted,
                ack_token=secrets.token_urlsafe(24),
                drill_id=drill_id,
                created_at=now,
                updated_at=now,
            )
        )
    )
    kind = "declared" if origin == "declared" else "detected"
    what = "DRILL incident" if drill_id is not None else "incident"
    add_event(
        conn,
        incident_id,
        now,
        kind,
        actor,
        f"S{severity} {what} {'declared' if kind == 'declared' else 'opened'}: {title}",
        {
            "severity": severity,
            "response_due_at": due,
            "policy": policy_name,
            "muted": muted,
            "drill_id": drill_id,
        },
    )
    if commander:
        assign(conn, incident_id, commander, "commander", actor, now)
    return int(incident_id)


def get_incident(conn: Connection, incident_id: int) -> dict[str, Any] | None:
    row = (
        conn.execute(select(t.incidents).where(t.incidents.c.id == incident_id)).mappings().first()
    )
    return dict(row) if row is not None else None


def latest_id(conn: Connection) -> int | None:
    """The newest incident's id, or None when there is none."""
    return conn.execute(select(func.max(t.incidents.c.id))).scalar()


def require(conn: Connection, incident_id: int) -> dict[str, Any]:
    inc = get_incident(conn, incident_id)
    if inc is None:
        raise IncidentError(f"no incident {incident_id}", "id", kind="not_found")
    return inc


def by_ack_token(conn: Connection, token: str) -> dict[str, Any] | None:
    row = (
        conn.execute(select(t.incidents).where(t.incidents.c.ack_token == token)).mappings().first()
    )
    return dict(row) if row is not None else None


def _incidents_query(statuses: tuple[str, ...] | None) -> Select:
    query = select(t.incidents).order_by(t.incidents.c.id.desc())
    if statuses:
        query = query.where(t.incidents.c.status.in_(statuses))
    return query


def list_incidents(
    conn: Connection,
    statuses: tuple[str, ...] | None = OPEN_STATUSES,
    limit: int | None = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    query = paging.window(_incidents_query(statuses), limit, offset)
    return [dict(r) for r in conn.execute(query).mappings()]


def count_incidents(conn: Connection, statuses: tuple[str, ...] | None = OPEN_STATUSES) -> int:
    return paging.count(conn, _incidents_query(statuses))


def open_for_component(conn: Connection, component: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(t.incidents)
            .where(
                t.incidents.c.component == component,
                t.incidents.c.origin == "alert",
                t.incidents.c.status.in_(OPEN_STATUSES),
                # a real failure never joins a drill's incident (it would be marked DRILL)
                t.incidents.c.drill_id.is_(None),
            )
            .order_by(t.incidents.c.id.desc())
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def open_for_drill(conn: Connection, drill_id: int) -> dict[str, Any] | None:
    """The open incident of a drill, which its further synthetic alerts join."""
    row = (
        conn.execute(
            select(t.incidents)
            .where(t.incidents.c.drill_id == drill_id, t.incidents.c.status.in_(OPEN_STATUSES))
            .order_by(t.incidents.c.id.desc())
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def timeline(conn: Connection, incident_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(t.incident_events)
        .where(t.incident_events.c.incident_id == incident_id)
        .order_by(t.incident_events.c.ts, t.incident_events.c.id)
    ).mappings()
    out = []
    for r in rows:
        item = dict(r)
        raw = item.pop("data_json")
        item["data"] = json.loads(raw) if raw else None
        out.append(item)
    return out


def roles(conn: Connection, incident_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(t.incident_roles)
        .where(t.incident_roles.c.incident_id == incident_id)
        .order_by(t.incident_roles.c.added_at)
    ).mappings()
    return [dict(r) for r in rows]


def alerts_of(conn: Connection, incident_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(t.alerts).where(t.alerts.c.incident_id == incident_id).order_by(t.alerts.c.id)
    ).mappings()
    return [dict(r) for r in rows]


def _touch(conn: Connection, incident_id: int, now: float, **values: Any) -> None:
    conn.execute(
        update(t.incidents).where(t.incidents.c.id == incident_id).values(updated_at=now, **values)
    )


def acknowledge(conn: Connection, incident_id: int, actor: str, now: float) -> bool:
    """Stop the repeating pages; False when it was already acknowledged."""
    inc = require(conn, incident_id)
    if inc["acknowledged_at"] is not None:
        return False
    if inc["status"] not in OPEN_STATUSES:
        raise IncidentError(f"incident {incident_id} is {inc['status']}", "status")
    why = f"acknowledged by {actor}"
    # first: the withdrawn rows stay locked until this commits, so a sender's claim of one of
    # them waits and then finds it cancelled, instead of reading the incident before the ack
    withdrawn = withdraw(conn, incident_id, STALE_ON_ACK, f"withdrawn: {why}")
    _touch(conn, incident_id, now, acknowledged_at=now, acknowledged_by=actor, next_page_at=None)
    waited = now - inc["detected_at"]
    add_event(
        conn,
        incident_id,
        now,
        "acknowledged",
        actor,
        f"acknowledged by {actor} after {_minutes(waited)}",
        {"response_seconds": round(waited, 1), "within_target": now <= inc["response_due_at"]},
    )
    note_withdrawn(conn, incident_id, withdrawn, actor, why, now)
    return True


def _at(ts: float, zone: tzinfo, now: float) -> str:
    when, today = datetime.fromtimestamp(ts, zone), datetime.fromtimestamp(now, zone)
    return f"{when:%H:%M}" if when.date() == today.date() else f"{when:%Y-%m-%d %H:%M}"


def already_done(
    conn: Connection, inc: dict[str, Any], action: str, zone: tzinfo, now: float
) -> str | None:
    """What makes `action` (acknowledge | resolve) on this incident moot, in words, or None.

    Pressing acknowledge twice, or resolving what resolved itself a moment ago, is no error:
    the person was right, someone (or Nachtwacht) was just quicker. The doors say so, and
    succeed.
    """
    name = f"incident {inc['id']}"
    if action == "acknowledge" and inc["acknowledged_at"] is not None:
        at = _at(inc["acknowledged_at"], zone, now)
        return f"{name} already acknowledged by {inc['acknowledged_by']} at {at}"
    if action == "resolve" and inc["status"] in ("resolved", "closed"):
        when = inc["resolved_at"] or inc["closed_at"]
        by = conn.execute(
            select(t.incident_events.c.actor)
            .where(
                t.incident_events.c.incident_id == inc["id"],
                t.incident_events.c.kind == "resolved",
            )
            .order_by(t.incident_events.c.id.desc())
            .limit(1)
        ).scalar()
        text = f"{name} already {inc['status']}"
        text += f" at {_at(when, zone, now)}" if when is not None else ""
        return text + (f" by {by}" if by else "")
    return None


def withdraw_queued(
    conn: Connection,
    incident_id: int,
    kinds: tuple[str, ...],
    actor: str,
    why: str,
    now: float,
) -> int:
    """Cancel queued messages that `why` made untrue, and say so on the timeline."""
    rows = withdraw(conn, incident_id, kinds, f"withdrawn: {why}")
    return note_withdrawn(conn, incident_id, rows, actor, why, now)


def note_withdrawn(
    conn: Connection, incident_id: int, rows: list[Any], actor: str, why: str, now: float
) -> int:
    """The timeline line for messages `withdraw` cancelled."""
    if not rows:
        return 0
    counts = Counter(label(r.kind) for r in rows)
    noun = "page" if all(r.kind in PAGES for r in rows) else "message"
    text = f"{len(rows)} queued {noun}{'s' if len(rows) != 1 else ''} withdrawn"
    if len(counts) > 1:
        text += " (" + ", ".join(f"{n} {_plural(what, n)}" for what, n in counts.items()) + ")"
    add_event(
        conn,
        incident_id,
        now,
        "notification_withdrawn",
        actor,
        f"{text}: {why}",
        {"outbox_ids": [r.id for r in rows], "kinds": dict(counts), "reason": why},
    )
    return len(rows)


def _plural(word: str, n: int) -> str:
    return word if n == 1 else f"{word}s"


def set_status(
    conn: Connection, incident_id: int, status: str, actor: str, now: float, message: str = ""
) -> dict[str, Any]:
    inc = require(conn, incident_id)
    if status not in STATUSES:
        raise IncidentError(
            f"status must be one of {', '.join(STATUSES)}", "status", kind="invalid"
        )
    old = inc["status"]
    if old == status:
        return inc
    if old == "closed":
        raise IncidentError(f"incident {incident_id} is closed", "status")
    if status == "closed" and old != "resolved":
        raise IncidentError("resolve an incident before closing it", "status")
    values: dict[str, Any] = {"status": status}
    if status == "mitigating" and inc["mitigated_at"] is None:
        values["mitigated_at"] = now
    if status == "monitoring" and inc["mitigated_at"] is None:
        values["mitigated_at"] = now
    if status == "resolved":
        values.update(resolved_at=now, next_step_at=None, next_page_at=None, update_due_at=None)
    if status == "closed":
        values["closed_at"] = now
    kind = "status"
    if status == "resolved":
        kind = "resolved"
    elif status == "closed":
        kind = "closed"
    elif old == "resolved":
        kind = "reopened"
        values.update(resolved_at=None)
        # an all-clear still queued would arrive after the incident is open again
        withdraw(conn, incident_id, ("resolved",), "withdrawn: reopened")
    _touch(conn, incident_id, now, **values)
    text = f"status {old} → {status}" + (f": {message}" if message else "")
    add_event(conn, incident_id, now, kind, actor, text, {"from": old, "to": status})
    return require(conn, incident_id)


def retitle(conn: Connection, incident_id: int, title: str, impact: str | None, now: float) -> None:
    """Name an alert's incident after a worse alert that joined it (cut as at opening)."""
    _touch(
        conn,
        incident_id,
        now,
        title=title[:300],
        impact=impact[: limits.TEXT] if impact is not None else None,
    )


def set_severity(
    conn: Connection,
    settings: Settings,
    incident_id: int,
    severity: int,
    actor: str,
    now: float,
    reason: str = "",
) -> dict[str, Any]:
    if not is_severity(severity):
        raise IncidentError("severity must be 1, 2 or 3", "severity", kind="invalid")
    check_length(reason, "reason")
    inc = require(conn, incident_id)
    if inc["severity"] == severity:
        return inc
    due = response_due(severity, inc["detected_at"], calendar(settings))
    values: dict[str, Any] = {"severity": severity, "response_due_at": due}
    if inc["update_due_at"] is not None:
        values["update_due_at"] = now + settings.incidents.update_every[severity]
    _touch(conn, incident_id, now, **values)
    add_event(
        conn,
        incident_id,
        now,
        "severity",
        actor,
        f"severity S{inc['severity']} → S{severity}" + (f": {reason}" if reason else ""),
        {"from": inc["severity"], "to": severity, "response_due_at": due},
    )
    return require(conn, incident_id)


def assign(
    conn: Connection, incident_id: int, contact: str, role: str, actor: str, now: float
) -> None:
    if role not in ("commander", "responder"):
        raise IncidentError("role must be commander or responder", "role", kind="invalid")
    if role == "commander":
        conn.execute(
            update(t.incident_roles)
            .where(t.incident_roles.c.incident_id == incident_id, t.incident_roles.c.role == role)
            .values(role="responder")
        )
        _touch(conn, incident_id, now, commander=contact)
    existing = conn.execute(
        select(t.incident_roles.c.role).where(
            t.incident_roles.c.incident_id == incident_id, t.incident_roles.c.contact == contact
        )
    ).first()
    if existing is None:
        conn.execute(
            t.incident_roles.insert().values(
                incident_id=incident_id, contact=contact, role=role, added_at=now
            )
        )
    else:
        conn.execute(
            update(t.incident_roles)
            .where(
                t.incident_roles.c.incident_id == incident_id,
                t.incident_roles.c.contact == contact,
            )
            .values(role=role)
        )
    add_event(conn, incident_id, now, "assigned", actor, f"{contact} is {role}")


def add_note(conn: Connection, incident_id: int, actor: str, now: float, text: str) -> None:
    check_length(text, "text")
    require(conn, incident_id)
    add_event(conn, incident_id, now, "note", actor, text)


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
