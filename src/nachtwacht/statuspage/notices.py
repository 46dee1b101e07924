"""Customer notices: drafted, edited, approved by a commander, published, and kept current.

- A draft comes from the protocol's customer notice template, at the escalation matrix's
  4-hour step (the incident's `customer_communication` timeline entry, found by `tick`) or by
  hand. It is written from public facts only: public component names, the public status,
  the configured public contact. Never the internal title, impact text, people or errors.
- Approval is the incident commander's (the contact named commander) or an admin's. It
  publishes the notice and queues one message per confirmed subscriber in one transaction.
- While the public incident is unresolved, the newest published notice carries `remind_at`:
  when it passes, the commander is reminded that a public update is due (claimed with a
  conditional update, so two engines remind once), and again every cadence after that.
- An incident resolved inside whose public notice still says otherwise gets a `resolved`
  draft for the commander to approve: the page never says "resolved" on its own.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, exists, select, update
from sqlalchemy.exc import IntegrityError

from nachtwacht.config.schema import Settings
from nachtwacht.incidents import service as incidents
from nachtwacht.incidents.models import OPEN_STATUSES
from nachtwacht.statuspage import reminders, subscribers
from nachtwacht.statuspage.service import (
    BODY_MAX,
    FROM_INCIDENT,
    STATUS_WORDS,
    TITLE_MAX,
    StatusPageError,
    check_components,
    check_status,
    check_text,
    notice_view,
    public_components,
)
from nachtwacht.store import claims
from nachtwacht.store import tables as t
from nachtwacht.store.db import inserted_id

n = t.status_notices.c


def _words(seconds: float) -> str:
    hours = seconds / 3600
    if hours < 1:
        return f"{seconds / 60:g} minutes"
    return "hour" if hours == 1 else f"{hours:g} hours"


def template(
    settings: Settings, kind: str, status: str, components: list[str], severity: int
) -> tuple[str, str]:
    """(title, body) of a draft: the protocol's Customer/User Notification, in public words."""
    page = settings.status_page
    what = ", ".join(components) or settings.site
    every = _words(page.cadence(severity))
    contact = f"For urgent matters, please contact: {page.contact}"
    if kind == "resolved":
        return f"Resolved: {what}", (
            f"The issue affecting {what} has been resolved.\n"
            "Thank you for your patience.\n\n" + contact
        )
    if kind == "update":
        return f"Update: {what}", (
            f"Status: {STATUS_WORDS[status]}\n"
            f"Impact: {what} may be slow or unavailable.\n\n"
            f"We will provide updates every {every} until resolved.\n\n" + contact
        )
    return f"Service disruption: {what}", (
        f"We are currently experiencing technical issues with {what}.\n"
        "Our team is actively working to resolve the issue.\n\n"
        f"Status: {STATUS_WORDS[status]}\n"
        "Expected Resolution: not yet known\n"
        f"Impact: {what} may be slow or unavailable.\n\n"
        f"We will provide updates every {every} until resolved.\n\n" + contact
    )


def get(conn: Connection, notice_id: int) -> dict[str, Any]:
    row = conn.execute(select(t.status_notices).where(n.id == notice_id)).mappings().first()
    if row is None:
        raise StatusPageError(f"there is no notice {notice_id}", "notice", kind="not_found")
    return dict(row)


def list_notices(
    conn: Connection, incident_id: int | None = None, state: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    query = select(t.status_notices).order_by(n.id.desc()).limit(limit)
    if incident_id is not None:
        query = query.where(n.incident_id == incident_id)
    if state is not None:
        query = query.where(n.state == state)
    return [notice_view(r, internal=True) for r in conn.execute(query).mappings()]


def _published(conn: Connection, incident_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(t.status_notices)
        .where(n.incident_id == incident_id, n.state == "published")
        .order_by(n.published_at, n.id)
    ).mappings()
    return [dict(r) for r in rows]


def draft(
    conn: Connection,
    settings: Settings,
    incident_id: int,
    actor: str,
    now: float,
    *,
    kind: str | None = None,
    title: str | None = None,
    body: str | None = None,
    public_status: str | None = None,
    components: list[str] | None = None,
    auto_key: str | None = None,
) -> dict[str, Any]:
    """A new draft for the incident from the template; what is given replaces its parts."""
    inc = incidents.get_incident(conn, incident_id)
    if inc is None:
        raise StatusPageError(f"there is no incident {incident_id}", "incident", kind="not_found")
    if inc.get("drill_id") is not None:
        # a drill stays inside: customers never read of an exercise
        raise StatusPageError(
            f"incident {incident_id} is a drill: it gets no public notice", "incident"
        )
    pending = conn.execute(
        select(n.id).where(n.incident_id == incident_id, n.state == "draft")
    ).scalar()
    if pending is not None:
        raise StatusPageError(
            f"notice {pending} is already a draft for incident {incident_id}: edit or approve it",
            "incident",
            kind="conflict",
        )
    published = _published(conn, incident_id)
    if kind is None:
        kind = (
            "resolved"
            if inc["status"] not in OPEN_STATUSES
            else ("update" if published else "notice")
        )
    if kind not in ("notice", "update", "resolved"):
        raise StatusPageError("kind must be notice, update or resolved", "kind")
    status = check_status(
        public_status or ("resolved" if kind == "resolved" else FROM_INCIDENT[inc["status"]])
    )
    if components is None:
        components = (
            json.loads(published[-1]["components_json"])
            if published
            else public_components(settings, inc["component"])
        )
    components = check_components(settings, components)
    default_title, default_body = template(settings, kind, status, components, inc["severity"])
    if published and kind != "notice":
        # the page heads the incident with its newest notice's title: an update keeps the
        # name customers know it by ("Login problems"), not "Update: Website"
        known = str(published[-1]["title"]).removeprefix("Resolved: ")
        default_title = (f"Resolved: {known}" if kind == "resolved" else known)[:TITLE_MAX]
    title = check_text(title if title is not None else default_title, "title", TITLE_MAX)
    body = check_text(body if body is not None else default_body, "body", BODY_MAX)
    notice_id = inserted_id(
        conn.execute(
            t.status_notices.insert().values(
                incident_id=incident_id,
                kind=kind,
                state="draft",
                title=title,
                body=body,
                public_status=status,
                components_json=json.dumps(components),
                created_by=actor[:120],
                created_at=now,
                updated_at=now,
                auto_key=auto_key,
            )
        )
    )
    incidents.add_event(
        conn,
        incident_id,
        now,
        "status_page",
        actor,
        f"public {kind} #{notice_id} drafted; it is published once a commander approves it",
        {"notice": notice_id},
    )
    return get(conn, notice_id)


def edit(
    conn: Connection,
    settings: Settings,
    notice_id: int,
    now: float,
    *,
    title: str | None = None,
    body: str | None = None,
    public_status: str | None = None,
    components: list[str] | None = None,
) -> dict[str, Any]:
    row = get(conn, notice_id)
    values: dict[str, Any] = {"updated_at": now}
    if title is not None:
        values["title"] = check_text(title, "title", TITLE_MAX)
    if body is not None:
        values["body"] = check_text(body, "body", BODY_MAX)
    if public_status is not None:
        values["public_status"] = check_status(public_status)
    if components is not None:
        values["components_json"] = json.dumps(check_components(settings, components))
    if not claims.claim(conn, t.status_notices, notice_id, n.state == "draft", values=values):
        raise StatusPageError(
            f"notice {notice_id} is {row['state']}: only a draft can be edited",
            "notice",
            kind="conflict",
        )
    return get(conn, notice_id)


def may_approve(inc: dict[str, Any], actor: str, role: str) -> bool:
    """The incident's commander, or an admin; nobody else speaks for the site in public."""
    return role == "admin" or (inc["commander"] is not None and actor == inc["commander"])


def approve(
    conn: Connection, settings: Settings, notice_id: int, actor: str, role: str, now: float
) -> tuple[dict[str, Any], int]:
    """Publish a draft; return it and the number of subscriber messages queued."""
    row = get(conn, notice_id)
    inc = incidents.require(conn, row["incident_id"])
    if not may_approve(inc, actor, role):
        who = f"its commander ({inc['commander']})" if inc["commander"] else "an admin"
        raise StatusPageError(
            f"only {who} or an admin can approve a public notice of incident {inc['id']}",
            "notice",
            kind="forbidden",
        )
    remind = (
        None
        if row["public_status"] == "resolved"
        else now + settings.status_page.cadence(inc["severity"])
    )
    if not claims.claim(
        conn,
        t.status_notices,
        notice_id,
        n.state == "draft",
        values={
            "state": "published",
            "approved_by": actor[:120],
            "published_at": now,
            "updated_at": now,
            "remind_at": remind,
        },
    ):
        raise StatusPageError(
            f"notice {notice_id} is {row['state']}, not a draft", "notice", kind="conflict"
        )
    # only the newest published notice says when the next public update is due
    conn.execute(
        update(t.status_notices)
        .where(n.incident_id == inc["id"], n.id != notice_id, n.remind_at.is_not(None))
        .values(remind_at=None)
    )
    fresh = get(conn, notice_id)
    queued = subscribers.fanout(conn, settings, notice_view(fresh), now)
    incidents.add_event(
        conn,
        inc["id"],
        now,
        "status_page",
        actor,
        f"public {row['kind']} #{notice_id} approved and published on the status page "
        f'("{fresh["title"]}"); {queued} subscriber message(s) queued',
        {"notice": notice_id, "queued": queued},
    )
    return fresh, queued


def discard(conn: Connection, notice_id: int, actor: str, now: float) -> dict[str, Any]:
    row = get(conn, notice_id)
    if not claims.claim(
        conn,
        t.status_notices,
        notice_id,
        n.state == "draft",
        values={"state": "discarded", "updated_at": now},
    ):
        raise StatusPageError(
            f"notice {notice_id} is {row['state']}: only a draft can be discarded",
            "notice",
            kind="conflict",
        )
    incidents.add_event(
        conn, row["incident_id"], now, "status_page", actor, f"public notice #{notice_id} discarded"
    )
    return get(conn, notice_id)


# -- the engine's part ------------------------------------------------------------------------


def tick(conn: Connection, settings: Settings, now: float) -> int:
    """Drafts due (4-hour step, resolution) and reminders due; return messages queued."""
    _draft_at_four_hours(conn, settings, now)
    _draft_resolved(conn, settings, now)
    subscribers.purge_lapsed(conn, now)
    return reminders.remind(conn, settings, now)


def _draft_at_four_hours(conn: Connection, settings: Settings, now: float) -> int:
    i, e = t.incidents.c, t.incident_events.c
    due = conn.execute(
        select(i.id)
        .where(
            i.status.in_(OPEN_STATUSES),
            i.drill_id.is_(None),
            exists().where(e.incident_id == i.id, e.kind == "customer_communication"),
            ~exists().where(n.incident_id == i.id),
        )
        .limit(50)
    ).scalars()
    return sum(_auto(conn, settings, incident_id, "notice", now) for incident_id in list(due))


def _draft_resolved(conn: Connection, settings: Settings, now: float) -> int:
    """Incidents resolved inside whose newest public notice is not a resolution."""
    i = t.incidents.c
    rows = conn.execute(
        select(i.id)
        .where(
            i.status.not_in(OPEN_STATUSES),
            exists().where(n.incident_id == i.id, n.remind_at.is_not(None)),
            ~exists().where(n.incident_id == i.id, n.state == "draft"),
            ~exists().where(n.incident_id == i.id, n.kind == "resolved"),
        )
        .limit(50)
    ).scalars()
    return sum(_auto(conn, settings, incident_id, "resolved", now) for incident_id in list(rows))


def _auto(conn: Connection, settings: Settings, incident_id: int, kind: str, now: float) -> int:
    """Nachtwacht's own draft, once: another engine that made it first wins the unique key."""
    try:
        with conn.begin_nested():
            draft(
                conn,
                settings,
                incident_id,
                "nachtwacht",
                now,
                kind=kind,
                auto_key=f"auto:{kind}:{incident_id}",
            )
    except (IntegrityError, StatusPageError):
        return 0  # made by another engine meanwhile, or a person's draft came first
    return 1
