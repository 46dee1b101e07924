"""The drill schedule: which drill is due, overdue, and the reminder to the operations manager.

A schedule's period is a calendar month or quarter in site time. It is *done* in a period when
a drill of its name was started in it (for a monthly schedule an ad-hoc drill counts too: any
exercise is the month's test). While a period is not done the schedule is *due*, and the
people in `drills.remind` (the operations manager) get one reminder for that period, with the
last drill's result. It is *overdue* when the previous period was reminded and still no drill
was started since that period began: a new installation is not overdue on its first day.

Once per period: the reminder is a `drill_reminders` row, unique per (schedule, period),
claimed pending → sent by a conditional update in the transaction that queues its messages.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from nachtwacht.config.schema import Settings
from nachtwacht.drills.measure import words
from nachtwacht.drills.models import DrillSchedule
from nachtwacht.drills.service import last_ended
from nachtwacht.incidents.notifications import contacts_for
from nachtwacht.notify.compose import compose, fit
from nachtwacht.notify.outbox import OutboundMessage, enqueue
from nachtwacht.store import tables as t
from nachtwacht.store.db import inserted_id


def period(every: str, ts: float, zone: ZoneInfo, back: int = 0) -> tuple[str, float, float]:
    """(label, start, end) of the month or quarter holding `ts`, or `back` periods before."""
    local = datetime.fromtimestamp(ts, zone)
    months = 1 if every == "monthly" else 3
    index = (local.year * 12 + local.month - 1) // months - back
    first = index * months
    start = datetime(first // 12, first % 12 + 1, 1, tzinfo=zone)
    nxt = first + months
    end = datetime(nxt // 12, nxt % 12 + 1, 1, tzinfo=zone)
    label = f"{start:%Y-%m}" if months == 1 else f"{start.year}-Q{start.month // 3 + 1}"
    return label, start.timestamp(), end.timestamp()


def _kinds(name: str, sched: DrillSchedule) -> tuple[str, ...]:
    return (name, "adhoc") if sched.every == "monthly" else (name,)


def _drill_since(conn: Connection, kinds: tuple[str, ...], since: float) -> bool:
    d = t.drills.c
    row = conn.execute(
        select(d.id).where(d.kind.in_(kinds), d.started_at >= since).limit(1)
    ).first()
    return row is not None


def _reminded(conn: Connection, name: str, label: str) -> bool:
    r = t.drill_reminders.c
    return (
        conn.execute(select(r.id).where(r.schedule == name, r.period == label)).first() is not None
    )


def status(conn: Connection, settings: Settings, now: float) -> list[dict[str, Any]]:
    """Every schedule with its current period, done/due/overdue and its last drill."""
    out = []
    for name, sched in settings.drills.schedules.items():
        kinds = _kinds(name, sched)
        label, start, end = period(sched.every, now, settings.zone)
        prev_label, prev_start, _ = period(sched.every, now, settings.zone, back=1)
        done = _drill_since(conn, kinds, start)
        overdue = (
            not done
            and _reminded(conn, name, prev_label)
            and not _drill_since(conn, kinds, prev_start)
        )
        out.append(
            {
                "name": name,
                "every": sched.every,
                "duration": sched.duration,
                "scenario": sched.scenario,
                "description": sched.description,
                "period": label,
                "due_by": end,
                "done": done,
                "due": not done,
                "overdue": overdue,
                "last": last_ended(conn, kinds),
            }
        )
    return out


def last_result(last: dict[str, Any] | None, zone: ZoneInfo) -> str:
    if last is None:
        return "No drill of this kind has been run yet."
    when = datetime.fromtimestamp(last["started_at"], zone).strftime("%Y-%m-%d")
    m = last["measures"]
    figures = f" ({m['met']} of {m['counted']} targets met)" if m else ""
    text = f"Last drill: #{last['id']} {last['scenario']} on {when}: {last['result']}{figures}."
    if m and m["missed"]:
        text += " Missed: " + " ".join(m["missed"][:3])
    return text


def reminders(conn: Connection, settings: Settings, now: float) -> int:
    """Queue the reminder of every due schedule not yet reminded this period; messages queued."""
    queued = 0
    for item in status(conn, settings, now):
        if item["done"] or _reminded(conn, item["name"], item["period"]):
            continue
        try:
            with conn.begin_nested():
                row_id = inserted_id(
                    conn.execute(
                        t.drill_reminders.insert().values(
                            schedule=item["name"],
                            period=item["period"],
                            due_at=item["due_by"],
                            created_at=now,
                            status="pending",
                        )
                    )
                )
        except IntegrityError:
            continue  # another process inserted it first: it sends it
        queued += _send(conn, settings, item, row_id, now)
    return queued


def _send(
    conn: Connection, settings: Settings, item: dict[str, Any], row_id: int, now: float
) -> int:
    messages = _messages(conn, settings, item, now)
    r = t.drill_reminders.c
    # `unreached`: nobody in `drills.remind` has an address a channel reaches; still once
    claimed = conn.execute(
        update(t.drill_reminders)
        .where(r.id == row_id, r.status == "pending")
        .values(status="sent" if messages else "unreached", sent_at=now)
    ).rowcount
    if not claimed:
        return 0
    return len(enqueue(conn, messages, now))


def _messages(
    conn: Connection, settings: Settings, item: dict[str, Any], now: float
) -> list[OutboundMessage]:
    """The reminder to `drills.remind` on their e-mail and SMS channels."""
    zone = settings.zone
    due = datetime.fromtimestamp(item["due_by"], zone).strftime("%Y-%m-%d %H:%M %Z")
    subject = f"Drill due: {item['name']} drill ({words(item['duration'])}) for {item['period']}"
    body = "\n".join(
        [
            f"The {item['name']} emergency response drill for {item['period']} ({settings.site}) "
            f"has not been run yet; it is due by {due}.",
            "",
            item["description"],
            "",
            f"Run it: nachtwacht drill run {item['scenario']} --schedule {item['name']}",
            "",
            last_result(item["last"], zone),
        ]
    )
    contacts, _ = contacts_for(conn, settings, settings.drills.remind, now)
    composed = compose(
        settings,
        kind="test",
        key=f"drill-reminder:{item['name']}:{item['period']}",
        incident=None,
        contacts=contacts,
        channels=[n for n, c in settings.notify.channels.items() if c.kind in ("email", "sms")],
        now=now,
    )
    messages = []
    for m in composed:
        channel = settings.notify.channels[m.channel]
        text = body
        if channel.kind == "sms":
            text = fit(f"{subject}: {body}", None, channel.max_length)
        m.kind, m.subject, m.body = "drill_reminder", subject, text
        m.payload = {**m.payload, "kind": "drill_reminder", "schedule": item["name"]}
        messages.append(m)
    return messages
