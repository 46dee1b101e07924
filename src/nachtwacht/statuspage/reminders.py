"""Reminders to the commander that a public update is due.

The newest published notice of an unresolved public incident carries `remind_at`; when it
passes, the commander (else whoever is on call) is reminded, and `remind_at` moves on by the
severity's cadence. The move is a conditional update on the old value, so two engines on one
store remind once; the outbox key (`status:n<notice>:remind:<due>`) makes a retry harmless.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from nachtwacht.config.schema import Settings
from nachtwacht.incidents import service as incidents
from nachtwacht.incidents.notifications import contacts_for, context_for
from nachtwacht.notify.compose import compose
from nachtwacht.notify.outbox import OutboundMessage, enqueue
from nachtwacht.notify.reach import reached
from nachtwacht.oncall.models import Contact
from nachtwacht.store import claims
from nachtwacht.store import tables as t

n = t.status_notices.c


def remind(conn: Connection, settings: Settings, now: float) -> int:
    rows = conn.execute(
        select(t.status_notices)
        .where(n.state == "published", n.remind_at.is_not(None), n.remind_at <= now)
        .limit(100)
    ).mappings()
    queued = 0
    for found in list(rows):
        row = dict(found)
        inc = incidents.require(conn, row["incident_id"])
        due = row["remind_at"]
        cadence = settings.status_page.cadence(inc["severity"])
        if not claims.claim(
            conn,
            t.status_notices,
            row["id"],
            n.remind_at == due,
            values={"remind_at": now + cadence},
        ):
            continue
        messages, contacts = _reminder(conn, settings, inc, row, due, now)
        ids = enqueue(conn, messages, now)
        # what was queued, and for whom: the sender's own entries say what was delivered
        names = ", ".join(c.name for c in reached(contacts, messages)) or "nobody"
        said = (
            f"reminder queued for {names} via {', '.join(sorted({m.channel for m in messages}))}"
            if ids
            else "no channel reaches the commander or the on-call engineer: nobody was reminded"
        )
        incidents.add_event(
            conn,
            inc["id"],
            now,
            "status_page",
            "nachtwacht",
            f"public update due (last published {_local(settings, row['published_at'])}); {said}",
            {"notice": row["id"], "due": due, "outbox_ids": ids},
        )
        queued += len(ids)
    return queued


def _reminder(
    conn: Connection,
    settings: Settings,
    inc: dict[str, Any],
    row: dict[str, Any],
    due: float,
    now: float,
) -> tuple[list[OutboundMessage], list[Contact]]:
    found = settings.people.contact(inc["commander"]) if inc["commander"] else None
    contacts = [found] if found else contacts_for(conn, settings, ["oncall"], now)[0]
    subject = f"[{settings.site}] #{inc['id']}: a public status update is due"
    body = (
        f"The status page last spoke of incident #{inc['id']} at "
        f'{_local(settings, row["published_at"])} ("{row["title"]}").\n'
        f"Draft the next public update with `nachtwacht statuspage notice draft {inc['id']}` "
        f"or on the incident page, then approve it.\n"
        f"{settings.incidents.public_url.rstrip('/')}/incidents/{inc['id']}"
    )
    composed = compose(
        settings,
        kind="reminder",
        key=f"status:n{row['id']}:remind:{int(due)}",
        incident=inc,
        contacts=contacts,
        context=context_for(conn, settings, inc),
        now=now,
    )
    return [
        dataclasses.replace(
            m,
            kind="status_reminder",
            subject=subject,
            body=body,
            payload={**m.payload, "kind": "status_reminder"},
        )
        for m in composed
    ], contacts


def _local(settings: Settings, ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, settings.zone).strftime("%Y-%m-%d %H:%M %Z")
