"""Escalation on the protocol's clock, counted from detection while the incident is unresolved.

`advance` does whatever is due for one incident: escalation steps by elapsed time, repeated
pages of a repeating step until acknowledged (then its backups), a breach of the response
target (recorded, and the next step fired at once), and a reminder when a status update is
overdue. Each action is claimed with a conditional UPDATE on the incident's counters, so two
processes on one database never send the same page twice.

What escalation needs from other domains is handed in, as Alertmanager's notify stage takes a
`Muter`: whether a firing alert is muted (alerts: maintenance, silences, inhibition) and the
gate a person's resolution must pass (checklist). Incidents then never import either, and
they can import incidents (tests/import_contract.py keeps the domain graph free of cycles).

Why one module of some 500 lines: steps, repeats, the breach and reminders are one clock over
the incident's counters, each claimed with the same conditional UPDATE; `post_update` and
`resolve` belong to it because they move that clock (the next update due) or stop it
(withdrawing queued pages). Split, each part would reach into the others' claims.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from sqlalchemy import Connection, or_, select, update

from nachtwacht.config.schema import Settings
from nachtwacht.incidents import notifications, service
from nachtwacht.incidents.models import OPEN_STATUSES, EscalationPolicy, EscalationStep
from nachtwacht.notify.compose import PER_CONTACT
from nachtwacht.notify.outbox import STALE_ON_RESOLVE, withdraw
from nachtwacht.oncall.models import Contact
from nachtwacht.oncall.service import external_contacts
from nachtwacht.store import claims
from nachtwacht.store import tables as t


class Muter(Protocol):
    """Why this firing alert is muted now (maintenance, silence, inhibition), or None."""

    def __call__(
        self, conn: Connection, settings: Settings, alert: dict[str, Any], now: float
    ) -> str | None: ...


class ResolutionGate(Protocol):
    """Allow a person's resolution of `inc` (recording why) or raise IncidentError."""

    def __call__(
        self,
        conn: Connection,
        inc: dict[str, Any],
        skip_reason: str | None,
        actor: str,
        now: float,
    ) -> None: ...


def due_incidents(conn: Connection, now: float) -> list[int]:
    i = t.incidents.c
    rows = conn.execute(
        select(i.id).where(
            i.status.in_(OPEN_STATUSES),
            or_(
                i.next_step_at <= now,
                i.next_page_at <= now,
                (
                    i.acknowledged_at.is_(None)
                    & i.breached_at.is_(None)
                    & (i.response_due_at <= now)
                ),
                i.update_due_at <= now,
            ),
        )
    ).scalars()
    return list(rows)


def _policy(settings: Settings, incident: dict[str, Any]) -> EscalationPolicy:
    return (
        settings.incidents.policies.get(incident["policy"])
        or settings.incidents.policy_for(incident["severity"])[1]
    )


def _claim(conn: Connection, incident_id: int, now: float, where: list, values: dict) -> bool:
    """Claim an action on the incident (store/claims.py): only one process moves its counters."""
    return claims.claim(
        conn, t.incidents, incident_id, *where, values={"updated_at": now, **values}
    )


def advance(
    conn: Connection, settings: Settings, incident_id: int, now: float, muter: Muter
) -> int:
    """Do what is due for one incident; return the number of messages queued."""
    inc = service.get_incident(conn, incident_id)
    if inc is None or inc["status"] not in OPEN_STATUSES:
        return 0
    queued = 0
    policy = _policy(settings, inc)
    overdue = (
        inc["acknowledged_at"] is None
        and inc["breached_at"] is None
        and inc["response_due_at"] <= now
    )
    if overdue and _claim(
        conn, incident_id, now, [t.incidents.c.breached_at.is_(None)], {"breached_at": now}
    ):
        service.add_event(
            conn,
            incident_id,
            now,
            "breach",
            "nachtwacht",
            f"response target missed: not acknowledged by "
            f"{_clock(settings, inc['response_due_at'])}",
            {"response_due_at": inc["response_due_at"]},
        )
        if not inc["muted"]:
            queued += _fire_next(conn, settings, incident_id, now, "response target missed")
        inc = service.require(conn, incident_id)
    if _muted_now(conn, settings, inc, now, muter):
        return queued  # maintenance, silence or inhibition: recorded, not paged
    elapsed = now - inc["detected_at"]
    while inc["next_step"] < len(policy.steps) and policy.steps[inc["next_step"]].after <= elapsed:
        fired = _fire_step(conn, settings, inc, inc["next_step"], policy, now, "")
        queued += fired or 0
        inc = service.require(conn, incident_id)
        if fired is None:
            break  # another process took it
    if (
        inc["next_page_at"] is not None
        and inc["next_page_at"] <= now
        and inc["acknowledged_at"] is None
    ):
        queued += _repeat_page(conn, settings, inc, policy, now)
        inc = service.require(conn, incident_id)
    if inc["update_due_at"] is not None and inc["update_due_at"] <= now:
        queued += _remind(conn, settings, inc, now)
    return queued


def _muted_now(
    conn: Connection, settings: Settings, inc: dict[str, Any], now: float, muter: Muter
) -> bool:
    """Is paging for this incident muted right now? Re-evaluated on every tick.

    An alert-born incident is muted while every firing alert is muted: its maintenance window
    or silence still applies, or the dependency that inhibits it is still failing. When that
    stops being so, paging resumes from where the clock is (and the other way round).
    """
    if inc["origin"] != "alert":
        return bool(inc["muted"])
    # One unmuted alert settles it. In a storm every alert added runs this, and reading and
    # asking about every firing alert each time made n alerts cost n^2 (169 s for 500), so
    # the firing alerts come in pages, newest first, and the first unmuted one ends the look.
    reasons: list[str] = []
    seen = 0
    for alert in _firing(conn, inc["id"]):
        seen += 1
        reason = muter(conn, settings, alert, now)
        if not reason:
            return _set_muted(conn, inc, False, reasons, now)
        reasons.append(reason)
    if not seen:
        return bool(inc["muted"])
    return _set_muted(conn, inc, True, reasons, now)


def _firing(conn: Connection, incident_id: int, page: int = 32) -> Iterator[dict[str, Any]]:
    after: int | None = None
    while True:
        query = select(t.alerts).where(
            t.alerts.c.incident_id == incident_id, t.alerts.c.status == "firing"
        )
        if after is not None:
            query = query.where(t.alerts.c.id < after)
        rows = conn.execute(query.order_by(t.alerts.c.id.desc()).limit(page)).mappings().all()
        for row in rows:
            yield dict(row)
        if len(rows) < page:
            return
        after = rows[-1]["id"]


def _set_muted(
    conn: Connection, inc: dict[str, Any], muted: bool, reasons: list[str], now: float
) -> bool:
    if muted != bool(inc["muted"]):
        conn.execute(update(t.incidents).where(t.incidents.c.id == inc["id"]).values(muted=muted))
        text = (
            f"paging muted: {', '.join(sorted(set(reasons)))}"
            if muted
            else "paging resumed: a firing alert is no longer muted"
        )
        service.add_event(conn, inc["id"], now, "note", "nachtwacht", text)
    return muted


def _fire_next(conn: Connection, settings: Settings, incident_id: int, now: float, why: str) -> int:
    inc = service.require(conn, incident_id)
    policy = _policy(settings, inc)
    if inc["next_step"] >= len(policy.steps):
        service.add_event(
            conn, incident_id, now, "escalated", "nachtwacht", f"{why}; no further escalation steps"
        )
        return 0
    return _fire_step(conn, settings, inc, inc["next_step"], policy, now, why) or 0


def _fire_step(
    conn: Connection,
    settings: Settings,
    inc: dict[str, Any],
    index: int,
    policy: EscalationPolicy,
    now: float,
    why: str,
) -> int | None:
    step = policy.steps[index]
    following = policy.steps[index + 1] if index + 1 < len(policy.steps) else None
    values: dict[str, Any] = {
        "next_step": index + 1,
        "next_step_at": inc["detected_at"] + following.after if following else None,
    }
    if step.repeat is not None and inc["acknowledged_at"] is None:  # a repeating step
        values.update(pages_sent=1, next_page_at=now + step.repeat)
    if index == 0 or step.notify:
        values["paged"] = True
    if not _claim(conn, inc["id"], now, [t.incidents.c.next_step == index], values):
        return None
    contacts, channels = notifications.contacts_for(conn, settings, step.notify, now)
    label = step.description or f"escalation step {index + 1}"
    service.add_event(
        conn,
        inc["id"],
        now,
        "escalated",
        "nachtwacht",
        # "Technical lead notification, escalated by rita: db slow; notifies role:technical_lead"
        f"{label}"
        + (f", {why}" if why else "")
        + f"; notifies {', '.join(step.notify) or 'nobody (no targets)'}",
        {"step": index, "after": step.after, "targets": step.notify, "reason": why or None},
    )
    fresh = service.require(conn, inc["id"])
    extra = {"step": step, "step_index": index}
    if step.action == "external_support":
        extra["external"] = external_contacts(settings, None)
        _note_external(conn, settings, fresh, now)
    if step.action == "customer_communication":
        service.add_event(
            conn,
            inc["id"],
            now,
            "customer_communication",
            "nachtwacht",
            "4 hours unresolved: communicate with customers and stakeholders "
            "(customer notice drafted) and consider activating disaster recovery",
        )
    kind = "emergency_alert" if index == 0 else "emergency_notification"
    queued = notifications.queue(
        conn,
        settings,
        fresh,
        kind=kind,
        key=f"inc{inc['id']}:step{index}",
        contacts=contacts,
        now=now,
        channels=channels,
        extra=extra,
        targets=step.notify,
    )
    if step.action == "customer_communication":
        queued += notifications.queue(
            conn,
            settings,
            fresh,
            kind="customer_notice",
            key=f"inc{inc['id']}:customer-notice",
            contacts=contacts,
            now=now,
            channels=channels,
            extra=extra,
        )
    return queued


def _note_external(conn: Connection, settings: Settings, inc: dict[str, Any], now: float) -> None:
    lines = []
    for ext in external_contacts(settings, None):
        parts = [ext.provider]
        if ext.emergency_number:
            parts.append(f"emergency {ext.emergency_number}")
        if ext.portal:
            parts.append(ext.portal)
        if ext.account_id:
            parts.append(f"account {ext.account_id}")
        if ext.contract_id:
            parts.append(f"contract {ext.contract_id}")
        lines.append(" · ".join(parts))
    service.add_event(
        conn,
        inc["id"],
        now,
        "external_support",
        "nachtwacht",
        "engage external support: " + ("; ".join(lines) or "no external contacts configured"),
        {"external": [e.model_dump() for e in external_contacts(settings, None)]},
    )


def _repeat_page(
    conn: Connection, settings: Settings, inc: dict[str, Any], policy: EscalationPolicy, now: float
) -> int:
    # the repeating step is the last fired step that repeats
    step: EscalationStep | None = None
    for s in policy.steps[: inc["next_step"]]:
        if s.repeat is not None:
            step = s
    if step is None or step.repeat is None:  # the second only tells mypy what the loop chose
        conn.execute(
            update(t.incidents).where(t.incidents.c.id == inc["id"]).values(next_page_at=None)
        )
        return 0
    number = inc["pages_sent"] + 1
    claimed = _claim(
        conn,
        inc["id"],
        now,
        [t.incidents.c.pages_sent == inc["pages_sent"], t.incidents.c.acknowledged_at.is_(None)],
        {"pages_sent": number, "next_page_at": now + step.repeat},
    )
    if not claimed:
        return 0
    contacts, channels = notifications.contacts_for(conn, settings, step.notify, now)
    backups: list[Contact] = []
    if step.backup_after is not None and number > step.backup_after:
        people = settings.people
        for c in contacts:
            backup = people.contact(c.backup) if c.backup else None
            if backup is not None and backup not in contacts and backup not in backups:
                backups.append(backup)
    service.add_event(
        conn,
        inc["id"],
        now,
        "escalated",
        "nachtwacht",
        # what was queued follows as its own entry: this one must not claim a page
        f"page {number}: not acknowledged yet"
        + (f"; backup {', '.join(b.name for b in backups)} added" if backups else ""),
        {"page": number, "backups": [b.id for b in backups]},
    )
    return notifications.queue(
        conn,
        settings,
        inc,
        kind="emergency_alert",
        key=f"inc{inc['id']}:page{number}",
        contacts=contacts + backups,
        now=now,
        channels=channels,
        extra={"repeat": number},
        targets=step.notify,
    )


def _remind(conn: Connection, settings: Settings, inc: dict[str, Any], now: float) -> int:
    cadence = settings.incidents.update_every[inc["severity"]]
    due = inc["update_due_at"]
    if not _claim(
        conn,
        inc["id"],
        now,
        [t.incidents.c.update_due_at == due],
        {"update_due_at": now + cadence},
    ):
        return 0
    service.add_event(
        conn,
        inc["id"],
        now,
        "update_overdue",
        "nachtwacht",
        # who is reminded is the queued reminder's own entry: the commander, or on call
        f"status update overdue (due {_clock(settings, due)})",
        {"due": due},
    )
    commander = settings.people.contact(inc["commander"]) if inc["commander"] else None
    contacts = (
        [commander] if commander else notifications.contacts_for(conn, settings, ["oncall"], now)[0]
    )
    return notifications.queue(
        conn,
        settings,
        inc,
        kind="reminder",
        key=f"inc{inc['id']}:reminder:{int(due)}",
        contacts=contacts,
        now=now,
        extra={"update_was_due": due},
    )


# -- actions by people (CLI and API call these) -----------------------------------------------


def escalate_now(
    conn: Connection, settings: Settings, incident_id: int, actor: str, now: float, reason: str
) -> int:
    """Fire the next escalation step at once (restart failed 3 times, corruption, ...)."""
    service.check_length(reason, "reason")
    inc = service.require(conn, incident_id)
    if inc["status"] not in OPEN_STATUSES:
        raise service.IncidentError(f"incident {incident_id} is {inc['status']}", "status")
    service.add_event(conn, incident_id, now, "note", actor, f"manual escalation: {reason}")
    return _fire_next(conn, settings, incident_id, now, f"escalated by {actor}: {reason}")


def post_update(
    conn: Connection,
    settings: Settings,
    incident_id: int,
    actor: str,
    now: float,
    message: str,
    status: str | None = None,
    *,
    gate: ResolutionGate | None = None,
) -> int:
    """A status update: recorded, the next one scheduled, and sent to everyone notified so far.

    A person posts it: one that resolves passes `gate`, as for `resolve`.
    """
    service.check_length(message, "message")
    inc = service.require(conn, incident_id)
    if status is not None and status != inc["status"]:
        if status == "resolved":
            if gate is None:
                # a caller that forgot the gate must not let an S1 close without its checklist
                raise TypeError("post_update resolving an incident needs the resolution gate")
            return resolve(conn, settings, incident_id, actor, now, message, gate=gate)
        inc = service.set_status(conn, incident_id, status, actor, now)
    if inc["status"] not in OPEN_STATUSES:
        raise service.IncidentError(f"incident {incident_id} is {inc['status']}", "status")
    cadence = settings.incidents.update_every[inc["severity"]]
    conn.execute(
        update(t.incidents)
        .where(t.incidents.c.id == incident_id)
        .values(update_due_at=now + cadence, updated_at=now)
    )
    service.add_event(conn, incident_id, now, "update", actor, message, {"status": inc["status"]})
    fresh = service.require(conn, incident_id)
    count = conn.execute(
        select(t.incident_events.c.id).where(
            t.incident_events.c.incident_id == incident_id, t.incident_events.c.kind == "update"
        )
    ).all()
    return notifications.queue(
        conn,
        settings,
        fresh,
        kind="status_update",
        key=f"inc{incident_id}:update{len(count)}",
        contacts=notifications.notified_so_far(conn, settings, incident_id),
        now=now,
        extra={"progress": message, "next_update_at": now + cadence},
        actor=actor,
    )


def resolve(
    conn: Connection,
    settings: Settings,
    incident_id: int,
    actor: str,
    now: float,
    message: str = "",
    *,
    gate: ResolutionGate | None = None,
    skip_checklist: str | None = None,
) -> int:
    """Resolve; an incident that paged sends its resolved notice, even during maintenance.

    People resolving (CLI, API, dashboard) pass the checklist's `gate`: an S1 or S2 incident
    then needs a passing restoration checklist or a written `skip_checklist` reason
    (checklist/gate). Nachtwacht's own resolution when every alert recovered passes none.
    """
    service.check_length(message, "message")
    inc = service.require(conn, incident_id)
    if inc["status"] not in OPEN_STATUSES:
        raise service.IncidentError(f"incident {incident_id} is {inc['status']}", "status")
    if gate is not None:
        gate(conn, inc, skip_checklist, actor, now)
    why = f"resolved by {actor}"
    # before the status changes, as for an ack: a sender's claim then waits and finds them gone
    withdrawn = withdraw(conn, incident_id, STALE_ON_RESOLVE, f"withdrawn: {why}")
    service.set_status(conn, incident_id, "resolved", actor, now, message)
    service.note_withdrawn(conn, incident_id, withdrawn, actor, why, now)
    if not inc["paged"]:
        return 0
    fresh = service.require(conn, incident_id)
    contacts = notifications.notified_so_far(conn, settings, incident_id)
    channels = notifications.followup_channels(conn, settings, incident_id)
    broadcast = [n for n in channels if settings.notify.channels[n].kind not in PER_CONTACT]
    if not contacts and not broadcast:
        # its pages were all withdrawn before they went out: an all-clear would be the first
        # anyone hears of it
        service.add_event(
            conn, incident_id, now, "note", "nachtwacht", "no resolved notice: nobody was notified"
        )
        return 0
    return notifications.queue(
        conn,
        settings,
        fresh,
        kind="resolved",
        key=f"inc{incident_id}:resolved:{int(now)}",
        contacts=contacts,
        now=now,
        # the notice says who else heard it, so nobody wonders whether the lead knows
        extra={"resolution": message, "notified_channels": broadcast},
        actor=actor,
    )


def _clock(settings: Settings, ts: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(ts, settings.zone).strftime("%H:%M %Z")
