"""Who hears about an incident, and the queueing of what they hear (through the outbox)."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from sqlalchemy import Connection, select

from nachtwacht.config import limits
from nachtwacht.config.schema import Settings
from nachtwacht.incidents.service import IncidentError, add_event, require, timeline
from nachtwacht.notify import reach
from nachtwacht.notify.compose import PAGING, PER_CONTACT, compose, drill_marked, fit, label
from nachtwacht.notify.outbox import PAGES, OutboundMessage, enqueue
from nachtwacht.notify.templates import TemplateError
from nachtwacht.oncall.models import Contact
from nachtwacht.oncall.service import resolve_target
from nachtwacht.store import tables as t


def contacts_for(
    conn: Connection, settings: Settings, targets: list[str], now: float
) -> tuple[list[Contact], list[str] | None]:
    """Contacts named by policy targets, and the channels `channel:` targets restrict to."""
    seen: dict[str, Contact] = {}
    channels: list[str] = []
    for target in targets:
        if target.startswith("channel:"):
            channels.append(target.partition(":")[2])
            continue
        for contact in resolve_target(conn, settings, target, now):
            seen.setdefault(contact.id, contact)
    return list(seen.values()), (channels or None)


def context_for(conn: Connection, settings: Settings, incident: dict[str, Any]) -> dict[str, Any]:
    """What templates may use besides the incident row itself."""
    events = timeline(conn, incident["id"])
    actions = [e["message"] for e in events if e["kind"] in ("update", "note", "status")]
    return {
        "site": settings.site,
        "timezone": settings.timezone,
        "ack_url": f"{settings.incidents.public_url.rstrip('/')}/ack/{incident['ack_token']}",
        "actions": actions[-5:],
        "people": {c.id: c for c in settings.people.contacts},
    }


def queue(
    conn: Connection,
    settings: Settings,
    incident: dict[str, Any],
    *,
    kind: str,
    key: str,
    contacts: list[Contact],
    now: float,
    channels: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    actor: str = "nachtwacht",
    targets: list[str] | None = None,
) -> int:
    """Queue one notification; the timeline says who it was queued for and who it misses.

    `targets` are the policy targets `contacts` came from: one that names nobody right now
    (a role nobody holds) is recorded as not delivered too.
    """
    context = context_for(conn, settings, incident) | (extra or {})
    if channels is not None:
        # `channel:X` targets choose the broadcast channels; contacts still get their own
        personal = [n for n, c in settings.notify.channels.items() if c.kind in ("email", "sms")]
        channels = [*personal, *channels]
    elif kind not in PAGES:
        # a follow-up goes where this incident's pages went, not to every room
        channels = followup_channels(conn, settings, incident["id"])
    messages = compose(
        settings,
        kind=kind,
        key=key,
        incident=incident,
        contacts=contacts,
        context=context,
        channels=channels,
        now=now,
    )
    ids = enqueue(conn, messages, now)
    if ids:
        # only who a message was composed for: intentions are not deliveries
        reached = reach.reached(contacts, messages)
        names = ", ".join(c.name for c in reached) or "team channels"
        routes = sorted({m.channel for m in messages})
        add_event(
            conn,
            incident["id"],
            now,
            "notification_queued",
            actor,
            f"{label(kind)} queued for {names} via {', '.join(routes)}",
            {"kind": kind, "key": key, "outbox_ids": ids, "contacts": [c.id for c in reached]},
        )
    # a key queued again (no new ids) had its misses recorded the first time
    if ids or not messages:
        _record_undelivered(conn, settings, incident, kind, key, contacts, messages, targets, now)
    return len(ids)


def _record_undelivered(
    conn: Connection,
    settings: Settings,
    incident: dict[str, Any],
    kind: str,
    key: str,
    contacts: list[Contact],
    messages: list[OutboundMessage],
    targets: list[str] | None,
    now: float,
) -> None:
    unheld = [
        t
        for t in targets or ()
        if reach.names_people(t) and not resolve_target(conn, settings, t, now)
    ]
    reasons = reach.undelivered(settings, contacts, messages, unheld)
    if reasons:
        add_event(
            conn,
            incident["id"],
            now,
            "not_delivered",
            "nachtwacht",
            f"{label(kind)} NOT delivered: {'; '.join(reasons)}",
            {"kind": kind, "key": key, "reasons": reasons, "unheld": unheld},
        )


def notified_so_far(conn: Connection, settings: Settings, incident_id: int) -> list[Contact]:
    """Everyone a message about this incident was queued for: they hear the follow-ups.

    A message withdrawn before it went out (acknowledged, resolved) notified nobody.
    """
    o = t.outbox.c
    ids = conn.execute(
        select(o.contact)
        .where(o.incident_id == incident_id, o.contact.is_not(None), o.status != "cancelled")
        .distinct()
    ).scalars()
    people = {c.id: c for c in settings.people.contacts}
    return [people[i] for i in ids if i in people]


def followup_channels(conn: Connection, settings: Settings, incident_id: int) -> list[str]:
    """The channels follow-ups (updates, notices, the resolved notice) of an incident use.

    Per-contact channels (email, SMS), which reach only the contacts a follow-up names; the
    broadcast channels a page about this incident was queued for (and not withdrawn); and
    broadcast channels configured `team_wide`. A room the policy has not brought in yet hears
    nothing of it.
    """
    o = t.outbox.c
    reached = set(
        conn.execute(
            select(o.channel)
            .where(
                o.incident_id == incident_id,
                o.contact.is_(None),
                o.kind.in_(PAGES),
                o.status != "cancelled",
            )
            .distinct()
        ).scalars()
    )
    return [
        name
        for name, cfg in settings.notify.channels.items()
        if cfg.kind in PER_CONTACT or name in reached or getattr(cfg, "team_wide", False)
    ]


# the messages a responder may edit on the incident page (or through the API) and send
EDITABLE_KINDS = ("status_update", "emergency_notification", "customer_notice")
MAX_SUBJECT = limits.TITLE
MAX_BODY = limits.DOCUMENT


def recipients(
    conn: Connection, settings: Settings, incident_id: int, to: str, now: float
) -> tuple[list[Contact], str]:
    """`notified` | `role:X` | `contact:Y` as contacts, and the words the timeline uses."""
    kind, _, ref = to.partition(":")
    if to == "notified":
        return notified_so_far(conn, settings, incident_id), "everyone notified so far"
    if kind == "contact" and ref:
        found = settings.people.contact(ref)
        if found is None:
            raise IncidentError(f"no contact '{ref}'", "to", kind="invalid")
        return [found], found.name
    if kind == "role" and ref:
        people = resolve_target(conn, settings, to, now)
        if not people:
            raise IncidentError(f"no contact has the role '{ref}'", "to", kind="invalid")
        return people, f"role {ref}"
    raise IncidentError("to must be 'notified', 'role:NAME' or 'contact:ID'", "to", kind="invalid")


def send_custom(
    conn: Connection,
    settings: Settings,
    incident_id: int,
    *,
    kind: str,
    subject: str,
    body: str,
    to: str,
    actor: str,
    now: float,
) -> dict[str, Any]:
    """Queue a responder's edited message through the outbox, and say so on the timeline.

    The messages are composed as the template would be (channels, addresses, payloads), then
    carry the edited subject and body. Each send has its own idempotency key: sending the same
    text twice on purpose sends it twice.
    """
    incident = require(conn, incident_id)
    if kind not in EDITABLE_KINDS:
        raise IncidentError(
            f"kind must be one of {', '.join(EDITABLE_KINDS)}", "kind", kind="invalid"
        )
    subject, body = subject.strip(), body.strip()
    if not subject or len(subject) > MAX_SUBJECT:
        raise IncidentError(
            f"subject must be 1 to {MAX_SUBJECT} characters", "subject", kind="invalid"
        )
    if not body or len(body) > MAX_BODY:
        raise IncidentError(f"body must be 1 to {MAX_BODY} characters", "body", kind="invalid")
    contacts, words = recipients(conn, settings, incident_id, to, now)
    key = f"custom:{incident_id}:{kind}:{uuid.uuid4().hex}"
    try:
        composed = compose(
            settings,
            kind=kind,
            key=key,
            incident=incident,
            contacts=contacts,
            context=context_for(conn, settings, incident),
            # as `queue`: a page goes where it is addressed, a follow-up where the pages went
            channels=None if kind in PAGES else followup_channels(conn, settings, incident_id),
            now=now,
        )
    except TemplateError as exc:
        raise IncidentError(str(exc), "kind", kind="invalid") from None
    messages = [
        _edited(settings, m, *drill_marked(incident, subject, body), contacts) for m in composed
    ]
    ids = enqueue(conn, messages, now)
    if not ids:
        raise IncidentError(f"no notification channel reaches {words}", "to", kind="invalid")
    routes = sorted({m.channel for m in messages})
    add_event(
        conn,
        incident_id,
        now,
        "notification_queued",
        actor,
        f"{label(kind)} edited and queued for {words} via {', '.join(routes)}",
        {
            "kind": kind,
            "key": key,
            "to": to,
            "edited": True,
            "subject": subject,
            "outbox_ids": ids,
            "contacts": [c.id for c in contacts],
        },
    )
    return {"kind": kind, "to": to, "key": key, "queued": len(ids), "outbox_ids": ids}


def _edited(
    settings: Settings, m: OutboundMessage, subject: str, body: str, contacts: list[Contact]
) -> OutboundMessage:
    cfg = settings.notify.channels[m.channel]
    text = body
    if cfg.kind == "sms":
        # a text message has no subject line: both go in, cut to the channel's length
        text = fit(f"{subject}: {body}", None, cfg.max_length)
    elif m.contact is None:
        # broadcast channels mention the people concerned, as the composed message did
        mentions = " ".join(p.chat for p in contacts if p.chat)
        if mentions:
            text = f"{body}\n\n{'Paging' if m.kind in PAGING else 'cc'}: {mentions}"
    return dataclasses.replace(m, subject=subject, body=text)
