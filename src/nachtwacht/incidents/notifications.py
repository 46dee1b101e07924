"""Who hears about an incident, and the queueing of what they hear (through the outbox)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from nachtwacht.config.schema import Settings
from nachtwacht.incidents.service import add_event, timeline
from nachtwacht.notify.compose import compose
from nachtwacht.notify.outbox import enqueue
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
) -> int:
    context = context_for(conn, settings, incident) | (extra or {})
    if channels is not None:
        # `channel:X` targets choose the broadcast channels; contacts still get their own
        personal = [n for n, c in settings.notify.channels.items() if c.kind in ("email", "sms")]
        channels = [*personal, *channels]
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
        names = ", ".join(c.name for c in contacts) or "team channels"
        routes = sorted({m.channel for m in messages})
        add_event(
            conn,
            incident["id"],
            now,
            "notification_queued",
            actor,
            f"{kind} queued for {names} via {', '.join(routes)}",
            {"kind": kind, "key": key, "outbox_ids": ids, "contacts": [c.id for c in contacts]},
        )
    return len(ids)


def notified_so_far(conn: Connection, settings: Settings, incident_id: int) -> list[Contact]:
    """Everyone a message about this incident was queued for: they hear the follow-ups."""
    ids = conn.execute(
        select(t.outbox.c.contact)
        .where(t.outbox.c.incident_id == incident_id, t.outbox.c.contact.is_not(None))
        .distinct()
    ).scalars()
    people = {c.id: c for c in settings.people.contacts}
    return [people[i] for i in ids if i in people]
