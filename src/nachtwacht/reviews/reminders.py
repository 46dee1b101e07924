"""Reminders of the review deadlines (to the commander) and of overdue follow-ups (to owners).

The protocol: the immediate analysis within 24 hours, the formal review within 1 week, both
counted from resolution (`reviews.analysis_within`, `reviews.review_within`). When a deadline
passes and its fields are still empty (root cause and impact; lessons), the commander (else
whoever is on call) is reminded once; a closed incident has had its review. A follow-up past
its due date reminds its owner, again every `reviews.followup_repeat` while it stays open.

Exactly once: a review reminder is recorded on the timeline (`review_reminder`, with its stage)
and not sent again once recorded; a follow-up's `reminded_at` is claimed with a conditional
update per repeat period. Both go through the outbox with idempotency keys
(`review:<incident>:<stage>`, `followup:<id>:<period>`), so two engines on one database
never send one twice.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, or_, select

from nachtwacht.config.schema import Settings
from nachtwacht.incidents import service as incidents
from nachtwacht.incidents.notifications import contacts_for, context_for
from nachtwacht.notify.compose import compose, drill_marked, fit
from nachtwacht.notify.outbox import OutboundMessage, enqueue
from nachtwacht.oncall.models import Contact
from nachtwacht.reviews.service import ANALYSIS_FIELDS, REVIEW_FIELDS, done, get_fields
from nachtwacht.store import claims
from nachtwacht.store import tables as t

# a deadline that passed longer ago than this (beyond the formal review's) is left alone:
# a reminder months late is noise, and the engine need not scan all history every minute
LOOKBACK = 30 * 86400.0
STAGES = (
    ("analysis", "immediate analysis", ANALYSIS_FIELDS),
    ("review", "formal post-incident review", REVIEW_FIELDS),
)


def words(seconds: float) -> str:
    if seconds < 2 * 86400:
        hours = seconds / 3600
        return f"{hours:g} hours"
    days = seconds / 86400
    return "1 week" if days == 7 else f"{days:g} days"


def _local(settings: Settings, ts: float) -> str:
    return datetime.fromtimestamp(ts, settings.zone).strftime("%Y-%m-%d %H:%M %Z")


def _messages(
    conn: Connection,
    settings: Settings,
    inc: dict[str, Any],
    *,
    kind: str,
    key: str,
    contacts: list[Contact],
    subject: str,
    body: str,
    now: float,
) -> list[OutboundMessage]:
    """Routed as a reminder is (the same channels and addresses), with these words."""
    composed = compose(
        settings,
        kind="reminder",
        key=key,
        incident=inc,
        contacts=contacts,
        context=context_for(conn, settings, inc),
        now=now,
    )
    subject, body = drill_marked(inc, subject, body)
    out = []
    for m in composed:
        channel = settings.notify.channels[m.channel]
        text = body
        if channel.kind == "sms":
            text = fit(f"{subject}: {body}", None, channel.max_length)
        elif m.contact is None:
            mentions = " ".join(p.chat for p in contacts if p.chat)
            if mentions:
                text = f"{body}\n\ncc: {mentions}"
        out.append(
            dataclasses.replace(
                m, kind=kind, subject=subject, body=text, payload={**m.payload, "kind": kind}
            )
        )
    return out


def _commander(
    conn: Connection, settings: Settings, inc: dict[str, Any], now: float
) -> list[Contact]:
    found = settings.people.contact(inc["commander"]) if inc["commander"] else None
    return [found] if found else contacts_for(conn, settings, ["oncall"], now)[0]


def _reminded_stages(conn: Connection, incident_id: int) -> set[str]:
    e = t.incident_events.c
    rows = conn.execute(
        select(e.data_json).where(e.incident_id == incident_id, e.kind == "review_reminder")
    ).scalars()
    return {json.loads(raw).get("stage") for raw in rows if raw}


def review_reminders(conn: Connection, settings: Settings, now: float) -> int:
    cfg = settings.reviews
    c = t.incidents.c
    candidates = conn.execute(
        select(t.incidents).where(
            # closed means the review is done (the dashboard closes "after the review")
            c.status == "resolved",
            c.resolved_at <= now - min(cfg.analysis_within, cfg.review_within),
            c.resolved_at >= now - cfg.review_within - LOOKBACK,
            c.severity.in_(cfg.remind_severities),
            c.drill_id.is_(None),  # a drill's report is its review (drills/)
        )
    ).mappings()
    queued = 0
    for inc in [dict(r) for r in candidates]:
        fields = get_fields(conn, inc["id"])
        reminded = _reminded_stages(conn, inc["id"])
        for stage, what, names in STAGES:
            within = cfg.analysis_within if stage == "analysis" else cfg.review_within
            due = inc["resolved_at"] + within
            if due > now or stage in reminded or done(fields, names):
                continue
            queued += _remind_review(conn, settings, inc, stage, what, within, due, now)
    return queued


def _remind_review(
    conn: Connection,
    settings: Settings,
    inc: dict[str, Any],
    stage: str,
    what: str,
    within: float,
    due: float,
    now: float,
) -> int:
    contacts = _commander(conn, settings, inc, now)
    number = inc["id"]
    if stage == "analysis":
        asks = "the timeline, the root cause and the impact"
        how = f'nachtwacht postmortem set {number} --root-cause "..." --impact "..."'
    else:
        asks = "a review meeting with all responders, its lessons and improvement actions"
        how = (
            f'nachtwacht postmortem set {number} --lessons "..." and '
            f'nachtwacht followup add {number} --title "..." --owner ID --due YYYY-MM-DD'
        )
    subject = f"REMINDER - #{number} - {what} overdue"
    body = (
        f"{', '.join(c.name for c in contacts) or 'Incident commander'},\n\n"
        f"incident #{number} (S{inc['severity']}: {inc['title']}, {settings.site}) was resolved "
        f"at {_local(settings, inc['resolved_at'])}. The protocol asks for the {what} within "
        f"{words(within)}: {asks}. It was due at {_local(settings, due)} and is not done yet.\n\n"
        f"Fill it in on the incident's review panel, or: {how}\n"
        f"The review so far: nachtwacht report postmortem {number} --format md\n"
        f"{settings.incidents.public_url.rstrip('/')}/incidents/{number}"
    )
    messages = _messages(
        conn,
        settings,
        inc,
        kind="review_reminder",
        key=f"review:{number}:{stage}",
        contacts=contacts,
        subject=subject,
        body=body,
        now=now,
    )
    ids = enqueue(conn, messages, now)
    names = ", ".join(c.name for c in contacts) or "nobody (no contact reachable)"
    incidents.add_event(
        conn,
        number,
        now,
        "review_reminder",
        "nachtwacht",
        f"{what} was due {_local(settings, due)} and is not done: reminding {names}",
        {"stage": stage, "due_at": due, "outbox_ids": ids, "contacts": [c.id for c in contacts]},
    )
    return len(ids)


def followup_reminders(conn: Connection, settings: Settings, now: float) -> int:
    repeat = max(settings.reviews.followup_repeat, 60.0)
    f = t.followups.c
    rows = conn.execute(
        select(t.followups).where(f.status == "open", f.due_at <= now).order_by(f.due_at, f.id)
    ).mappings()
    queued = 0
    for row in [dict(r) for r in rows]:
        period = int((now - row["due_at"]) // repeat)
        period_start = row["due_at"] + period * repeat
        if not claims.claim(
            conn,
            t.followups,
            row["id"],
            f.status == "open",
            or_(f.reminded_at.is_(None), f.reminded_at < period_start),
            values={"reminded_at": now},
        ):
            continue  # reminded in this period already (here or by another engine)
        queued += _remind_followup(conn, settings, row, period, now)
    return queued


def _remind_followup(
    conn: Connection, settings: Settings, row: dict[str, Any], period: int, now: float
) -> int:
    owner = settings.people.contact(row["owner"])
    inc = incidents.get_incident(conn, row["incident_id"])
    if owner is None or inc is None:
        return 0
    subject = f"REMINDER - improvement action #{row['id']} overdue (incident #{inc['id']})"
    body = (
        f"{owner.name},\n\n"
        f"the improvement action #{row['id']} from the review of incident #{inc['id']} "
        f"({inc['title']}, {settings.site}) is yours and was due at "
        f"{_local(settings, row['due_at'])}:\n\n    {row['title']}\n\n"
        f"When it is done: nachtwacht followup done {row['id']}"
    )
    messages = _messages(
        conn,
        settings,
        inc,
        kind="followup_reminder",
        key=f"followup:{row['id']}:{period}",
        contacts=[owner],
        subject=subject,
        body=body,
        now=now,
    )
    ids = enqueue(conn, messages, now)
    incidents.add_event(
        conn,
        inc["id"],
        now,
        "followup_reminder",
        "nachtwacht",
        f"improvement action #{row['id']} is overdue: reminding {owner.name}",
        {"followup_id": row["id"], "period": period, "outbox_ids": ids},
    )
    return len(ids)


def tick(conn: Connection, settings: Settings, now: float) -> int:
    return review_reminders(conn, settings, now) + followup_reminders(conn, settings, now)
