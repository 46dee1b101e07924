"""The on-call handoff summary: what the incoming engineer takes over, sent once per handoff.

At each regular handoff of a rotation (oncall/turns.py) the person then on call (overrides
applied) gets open incidents, the silences and maintenance windows in force, open follow-ups
due before their turn ends, and the contacts whose channels are not verified. The obligation
row `handoff:<rotation>:<handoff epoch>` is claimed by a conditional update in the
transaction that queues the messages (store/obligations.py), so two engines never send it
twice and a crash before the commit sends it at the next tick.

A handoff counts only after the first time this module ran on the store (its watermark row),
so installing Nachtwacht mid-turn sends nothing for a turn that began before; and only within
`LATE` of it: a summary a day late describes a shift already half over.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from nachtwacht.alerts.maintenance import active_silences, active_windows
from nachtwacht.config.schema import Settings
from nachtwacht.incidents import service as incidents
from nachtwacht.notify.compose import fit
from nachtwacht.notify.outbox import OutboundMessage, enqueue
from nachtwacht.oncall import service as oncall
from nachtwacht.oncall import verify
from nachtwacht.oncall.turns import shift_at
from nachtwacht.reviews.followups import list_followups
from nachtwacht.store import tables as t
from nachtwacht.store.obligations import once

LATE = 6 * 3600.0
WATERMARK = "handoff:watermark"
MAX_ITEMS = 20  # per section; the rest is "and N more"


def _local(settings: Settings, ts: float) -> str:
    return datetime.fromtimestamp(ts, settings.zone).strftime("%a %Y-%m-%d %H:%M %Z")


def watermark(conn: Connection, now: float) -> float:
    """When this module first ran on the store: handoffs before it are not summarised."""
    once(conn, WATERMARK, "watermark", now)
    o = t.readiness_obligations.c
    return float(conn.execute(select(o.created_at).where(o.key == WATERMARK)).scalar_one())


def summary(conn: Connection, settings: Settings, now: float, until: float) -> dict[str, Any]:
    """What someone taking over now must know; `until` is when their turn ends."""
    open_incidents = incidents.list_incidents(conn, limit=MAX_ITEMS + 1)
    windows = active_windows(conn, settings, now)
    silences = active_silences(conn, now)
    followups = [
        f
        for f in list_followups(conn, now, "open", limit=200)
        if f.get("due_ts") is not None and f["due_ts"] <= until
    ]
    unverified = verify.problems(verify.state(conn, settings, now))
    return {
        "incidents": open_incidents,
        "maintenance": windows,
        "silences": silences,
        "followups": followups,
        "unverified": unverified,
    }


def _section(title: str, lines: list[str]) -> str:
    if not lines:
        return f"{title}: none"
    more = f"\n  ... and {len(lines) - MAX_ITEMS} more" if len(lines) > MAX_ITEMS else ""
    return f"{title} ({len(lines)}):\n" + "\n".join(f"  - {x}" for x in lines[:MAX_ITEMS]) + more


def render(
    settings: Settings, rotation: str, name: str, start: float, until: float, s: dict[str, Any]
) -> tuple[str, str, str]:
    """(subject, body, short text for SMS)."""
    url = settings.incidents.public_url.rstrip("/")
    inc_lines = [
        f"#{i['id']} S{i['severity']} {i['title']} ({i['status']}"
        + (", not acknowledged" if not i.get("acknowledged_at") else "")
        + f") {url}/incidents/{i['id']}"
        for i in s["incidents"]
    ]
    maint = [
        f"{w.name} until {_local(settings, w.ends_at)}"
        + (f" ({', '.join(w.components + w.probes)})" if w.components or w.probes else " (all)")
        for w in s["maintenance"]
    ]
    sil = [
        f"{x['matcher']} until {_local(settings, x['ends_at'])}"
        + (f": {x['comment']}" if x.get("comment") else "")
        for x in s["silences"]
    ]
    fol = [
        f"#{f['id']} {f['title']} (owner {f['owner']}, due {_local(settings, f['due_ts'])})"
        for f in s["followups"]
    ]
    subject = f"{settings.site}: handoff - you are on call in {rotation}"
    body = "\n\n".join(
        [
            f"{name},\n\nyou are on call in rotation {rotation} from {_local(settings, start)} "
            f"until {_local(settings, until)}. What you take over:",
            _section("Open incidents", inc_lines),
            _section("Maintenance in force", maint),
            _section("Silences in force", sil),
            _section("Follow-ups due before your turn ends", fol),
            _section("Contacts not verified", s["unverified"]),
            f"On call and contacts: {url}/oncall",
        ]
    )
    short = (
        f"{settings.site}: on call in {rotation} until {_local(settings, until)}. "
        f"{len(inc_lines)} open incidents, {len(maint)} maintenance, {len(sil)} silences, "
        f"{len(fol)} follow-ups due, {len(s['unverified'])} unverified contacts. {url}/oncall"
    )
    return subject, body, short


def tick(conn: Connection, settings: Settings, now: float) -> int:
    """Summarise every handoff that is due and not yet summarised; the messages queued."""
    if not settings.people.verification.handoff_summary or not settings.people.rotations:
        return 0
    since = watermark(conn, now)
    queued = 0
    for rotation in settings.people.rotations:
        _member, start, _end = shift_at(settings, rotation, now)
        if not math.isfinite(start) or start < since or now - start > LATE:
            continue
        key = f"handoff:{rotation.name}:{int(start)}"
        incoming = oncall.on_call(conn, settings, rotation.name, now)
        if incoming is None:
            continue
        routes = verify.routes(settings, incoming)
        if not routes:
            # not claimed: a summary that reaches nobody is not done; once a channel reaches
            # them (a config reload), it goes, within LATE (doctor names the contact meanwhile)
            continue
        if not once(conn, key, "handoff", now, {"contact": incoming.id}):
            continue
        until, _next = oncall.next_handoff(conn, settings, rotation.name, now)
        content = summary(conn, settings, now, until)
        subject, body, short = render(settings, rotation.name, incoming.name, start, until, content)
        messages = []
        for route in routes:
            text = body
            if route.kind == "sms":
                text = fit(short, None, settings.notify.channels[route.channel].max_length)  # type: ignore[union-attr]
            elif route.kind in verify.CHAT_KINDS:
                text = f"{route.address} {body}"
            messages.append(
                OutboundMessage(
                    idempotency_key=f"{key}:{route.channel}",
                    kind="handoff",
                    channel=route.channel,
                    subject=subject,
                    body=text,
                    contact=incoming.id,
                    address=None if route.kind in verify.CHAT_KINDS else route.address,
                    payload={"kind": "handoff", "rotation": rotation.name, "start": start},
                )
            )
        queued += len(enqueue(conn, messages, now))
    return queued
