"""Turn "tell these people about this incident" into outbox messages, one per delivery.

Per-contact channels (`email`, `sms`) get one message per contact that has the address;
broadcast channels (`webhook`, `slack`, `mattermost`, `teams`) get one message per channel
naming every recipient, so a chat room sees one post per page, not one per person.

The idempotency key of each message is `{key}:{channel}:{contact or '*'}`: composing the same
notification twice (an escalation step retried after a crash, or two targets naming the same
channel) yields the same keys, and `outbox.enqueue` keeps only the first.
"""

from __future__ import annotations

import re
from typing import Any

from nachtwacht.clock import SystemClock, iso
from nachtwacht.config.schema import Settings
from nachtwacht.incidents.models import describe_target
from nachtwacht.notify.outbox import OutboundMessage
from nachtwacht.notify.templates import render, render_text
from nachtwacht.oncall.models import Contact

PER_CONTACT = ("email", "sms")
# the messages that ask someone to act: they carry the acknowledge link and the deadline
PAGING = ("emergency_alert", "emergency_notification", "status_update", "reminder")
BROADCAST = ("webhook", "slack", "mattermost", "teams")
SEVERITY_NAMES = {1: "Critical", 2: "High", 3: "Medium"}
# what a message is, in the words of the timeline ("page sent to alice by email")
KIND_LABELS = {
    "emergency_alert": "page",
    "emergency_notification": "notification",
    "status_update": "status update",
    "customer_notice": "customer notice",
    "resolved": "resolved notice",
    "reminder": "reminder",
    "test": "test message",
}
# timeline entries that count as actions taken, for the notification and update templates
ACTION_EVENTS = (
    "note",
    "update",
    "status",
    "acknowledged",
    "assigned",
    "escalated",
    "severity",
    "external_support",
)
PUBLIC_STATUS = {
    "investigating": "We are investigating the cause.",
    "mitigating": "We have found the cause and are applying a fix.",
    "monitoring": "A fix has been applied and we are monitoring the results.",
    "resolved": "The issue has been resolved.",
    "closed": "The issue has been resolved.",
}


DRILL = "DRILL"


def drill_marked(incident: dict[str, Any] | None, subject: str, body: str) -> tuple[str, str]:
    """A drill's message, marked DRILL at the start of its subject and of its body.

    Applied where messages are rendered (and to edited ones), from the incident's `drill_id`,
    so pages, escalations, reminders, updates and the all-clear of a drill all say so, and a
    template override cannot forget it.
    """
    drill_id = incident.get("drill_id") if incident else None
    if drill_id is None:
        return subject, body
    if not subject.startswith(DRILL):
        subject = f"{DRILL}: {subject}"
    if not body.startswith(DRILL):
        body = f"{DRILL} #{drill_id}: an exercise, not a real incident.\n\n{body}"
    return subject, body


def label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind)


def ack_url(settings: Settings, incident: dict[str, Any] | None) -> str | None:
    if not incident or not incident.get("ack_token"):
        return None
    return f"{settings.incidents.public_url.rstrip('/')}/ack/{incident['ack_token']}"


def compose(
    settings: Settings,
    *,
    kind: str,
    key: str,
    incident: dict[str, Any] | None,
    contacts: list[Contact],
    context: dict[str, Any] | None = None,
    channels: list[str] | None = None,
    now: float | None = None,
) -> list[OutboundMessage]:
    """The messages that deliver one notification to `contacts` on the configured channels.

    `channels` restricts delivery to those channel names (a policy target `channel:NAME`);
    `context` adds or overrides template variables (`actions`, `progress`, `next_steps`,
    `estimated_resolution`, `summary`, `timeline` ...). `now` should be the caller's clock.
    """
    configured = settings.notify.channels
    names = list(configured) if channels is None else list(channels)
    unknown = [n for n in names if n not in configured]
    if unknown:
        raise ValueError(f"no notification channel named {', '.join(map(repr, unknown))}")
    extra = dict(context or {})
    when = now if now is not None else extra.get("now")
    if when is None:
        when = SystemClock().now()
    people = _unique(contacts)
    base = base_context(settings, kind, incident, people, float(when), extra)
    incident_id = incident.get("id") if incident else None
    messages: list[OutboundMessage] = []
    for name in names:
        cfg = configured[name]
        if cfg.kind in PER_CONTACT:
            for person in people:
                address = person.email if cfg.kind == "email" else person.phone
                if not address:
                    continue
                ctx = {
                    **base,
                    "channel": name,
                    "channel_kind": cfg.kind,
                    "broadcast": False,
                    "recipient": _person(person),
                }
                subject, body = drill_marked(
                    incident, *render(kind, ctx, settings.notify.templates_dir)
                )
                if cfg.kind == "sms":
                    text = render_text(
                        "sms",
                        {**ctx, "subject": subject, "body": body},
                        settings.notify.templates_dir,
                    )
                    # the link survives the cut only if the message carried one
                    ack = base["ack_url"] if base["ack_url"] and base["ack_url"] in body else None
                    body = fit(text, ack, cfg.max_length)
                messages.append(
                    OutboundMessage(
                        idempotency_key=f"{key}:{name}:{person.id}",
                        kind=kind,
                        channel=name,
                        subject=subject,
                        body=body,
                        incident_id=incident_id,
                        contact=person.id,
                        address=address,
                        payload=_payload(base, [person]),
                    )
                )
        else:
            ctx = {
                **base,
                "channel": name,
                "channel_kind": cfg.kind,
                "broadcast": True,
                "recipient": None,
            }
            subject, body = drill_marked(
                incident, *render(kind, ctx, settings.notify.templates_dir)
            )
            mentions = " ".join(p.chat for p in people if p.chat)
            if mentions:
                body = f"{body}\n\n{'Paging' if kind in PAGING else 'cc'}: {mentions}"
            messages.append(
                OutboundMessage(
                    idempotency_key=f"{key}:{name}:*",
                    kind=kind,
                    channel=name,
                    subject=subject,
                    body=body,
                    incident_id=incident_id,
                    payload=_payload(base, people),
                )
            )
    return messages


def base_context(
    settings: Settings,
    kind: str,
    incident: dict[str, Any] | None,
    people: list[Contact],
    now: float,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Everything the templates can use; `extra` (the caller's context) wins over defaults."""
    inc = dict(incident) if incident else {}
    severity = inc.get("severity")
    status = inc.get("status") or ""
    commander_id = inc.get("commander")
    commander = _name(settings, commander_id) if commander_id else None
    timeline = extra.get("timeline") or []
    actions = [
        e["message"] for e in timeline if e.get("kind") in ACTION_EVENTS and e.get("message")
    ]
    acked_by = inc.get("acknowledged_by")
    if inc.get("acknowledged_at"):
        current = f"{status.capitalize()}; acknowledged by {acked_by}."
    elif inc:
        current = f"{status.capitalize()}; not yet acknowledged."
    else:
        current = ""
    update_every = settings.incidents.update_every.get(severity) if severity else None
    names = [p.name for p in people]
    ctx: dict[str, Any] = {
        "site": settings.site,
        "timezone": settings.timezone,
        "zone": settings.zone,
        "now": now,
        "kind": kind,
        "label": label(kind),
        "paging": kind in PAGING,
        "incident": inc,
        "severity": severity,
        "severity_label": f"S{severity}" if severity else "",
        "severity_name": SEVERITY_NAMES.get(severity or 0, ""),
        "status": status,
        "status_name": status.capitalize(),
        "ack_url": ack_url(settings, incident),
        "response_target": describe_target(severity) if severity in (1, 2, 3) else "",
        "commander": commander,
        "responder": commander or ", ".join(names) or "on-call engineer",
        "recipients": [_person(p) for p in people],
        "actions": actions,
        "next_steps": [],
        "progress": None,
        "estimated_resolution": None,
        "next_update": inc.get("update_due_at"),
        "update_every": update_every,
        "current_status": current,
        "public_status": PUBLIC_STATUS.get(status, ""),
        "emergency_contact": _emergency_contact(settings, commander_id),
        "summary": None,
        "user_impact": None,
    }
    ctx.update(extra)
    return ctx


def fit(text: str, ack: str | None, max_length: int) -> str:
    """Cut `text` to `max_length` characters, keeping ` Ack: <link>` whole at the end."""
    tail = f" Ack: {ack}" if ack else ""
    flat = re.sub(r"\s+", " ", text).strip()
    room = max_length - len(tail)
    if len(flat) > room:
        flat = flat[: max(0, room - 1)].rstrip() + "…"
    return (flat + tail)[:max_length]


def _payload(base: dict[str, Any], people: list[Contact]) -> dict[str, Any]:
    inc = base["incident"]
    payload = {
        "kind": base["kind"],
        "site": base["site"],
        "incident_id": inc.get("id"),
        "title": inc.get("title"),
        "severity": inc.get("severity"),
        "status": inc.get("status"),
        "component": inc.get("component"),
        "commander": inc.get("commander"),
        "detected_at": iso(inc.get("detected_at")),
        "response_due_at": iso(inc.get("response_due_at")),
        "acknowledged_at": iso(inc.get("acknowledged_at")),
        "ack_url": base["ack_url"],
        "recipients": [{"id": p.id, "name": p.name, "chat": p.chat} for p in people],
    }
    if inc.get("drill_id") is not None:
        payload["drill_id"] = inc["drill_id"]  # a receiver can tell an exercise from the thing
    return payload


def _unique(contacts: list[Contact]) -> list[Contact]:
    seen: set[str] = set()
    out = []
    for c in contacts:
        if c.id not in seen:
            seen.add(c.id)
            out.append(c)
    return out


def _person(c: Contact) -> dict[str, Any]:
    return {"id": c.id, "name": c.name, "email": c.email, "phone": c.phone, "chat": c.chat}


def _name(settings: Settings, contact_id: str) -> str:
    found = settings.people.contact(contact_id)
    return found.name if found else contact_id


def _emergency_contact(settings: Settings, commander_id: str | None) -> str | None:
    """Who customers may call: the commander, else the operations manager or technical lead."""
    people = settings.people
    candidates = [people.contact(commander_id)] if commander_id else []
    for role in ("operations_manager", "technical_lead"):
        candidates += [c for c in people.contacts if role in c.roles]
    for c in candidates:
        if c is not None and (c.phone or c.email):
            return f"{c.name} ({c.phone or c.email})"
    return None
