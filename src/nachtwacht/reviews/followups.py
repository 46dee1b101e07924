"""Improvement actions from a review: a title, an owner (a contact) and a due date.

Each is recorded on its incident's timeline when added and when done; reminders.py reminds
the owner when one is due and still open.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, Select, select

from nachtwacht.clock import iso
from nachtwacht.config import limits
from nachtwacht.config.schema import Settings
from nachtwacht.incidents import service as incidents
from nachtwacht.reviews.service import ReviewError
from nachtwacht.store import claims, paging
from nachtwacht.store import tables as t
from nachtwacht.store.db import inserted_id

Status = Literal["open", "done", "all"]


def view(row: dict[str, Any], now: float) -> dict[str, Any]:
    out = dict(row)
    for key in ("due_at", "created_at", "done_at", "reminded_at"):
        out[key] = iso(row[key])
    out["due_ts"] = row["due_at"]
    out["overdue"] = row["status"] == "open" and row["due_at"] <= now
    return out


def _get(conn: Connection, followup_id: int) -> dict[str, Any]:
    row = (
        conn.execute(select(t.followups).where(t.followups.c.id == followup_id)).mappings().first()
    )
    if row is None:
        raise ReviewError(f"no follow-up {followup_id}", "id", kind="not_found")
    return dict(row)


def add(
    conn: Connection,
    settings: Settings,
    incident_id: int,
    *,
    title: str,
    owner: str,
    due_at: float,
    actor: str,
    now: float,
) -> dict[str, Any]:
    incidents.require(conn, incident_id)
    title = title.strip()
    if not 3 <= len(title) <= limits.TITLE:
        raise ReviewError(
            f"the title must be 3 to {limits.TITLE} characters", "title", kind="invalid"
        )
    contact = settings.people.contact(owner)
    if contact is None:
        known = ", ".join(c.id for c in settings.people.contacts) or "none configured"
        raise ReviewError(f"no contact '{owner}' (contacts: {known})", "owner", kind="invalid")
    followup_id = inserted_id(
        conn.execute(
            t.followups.insert().values(
                incident_id=incident_id,
                title=title,
                owner=owner,
                due_at=due_at,
                status="open",
                created_by=actor[:120],
                created_at=now,
            )
        )
    )
    due = datetime.fromtimestamp(due_at, settings.zone).strftime("%Y-%m-%d %H:%M")
    incidents.add_event(
        conn,
        incident_id,
        now,
        "followup",
        actor,
        f"improvement action #{followup_id} for {contact.name}, due {due}: {title}",
        {"followup_id": followup_id, "owner": owner, "due_at": due_at},
    )
    return view(_get(conn, int(followup_id)), now)


def complete(conn: Connection, followup_id: int, actor: str, now: float) -> dict[str, Any]:
    row = _get(conn, followup_id)
    if row["status"] == "done":
        raise ReviewError(f"follow-up {followup_id} is already done", "id")
    if not claims.claim(
        conn,
        t.followups,
        followup_id,
        t.followups.c.status == "open",
        values={"status": "done", "done_at": now},
    ):
        raise ReviewError(f"follow-up {followup_id} is already done", "id")
    incidents.add_event(
        conn,
        row["incident_id"],
        now,
        "followup",
        actor,
        f"improvement action #{followup_id} done: {row['title']}",
        {"followup_id": followup_id, "done": True},
    )
    return view(_get(conn, followup_id), now)


def _query(status: Status, incident_id: int | None, owner: str | None) -> Select:
    c = t.followups.c
    query = select(t.followups).order_by(c.due_at, c.id)
    if status != "all":
        query = query.where(c.status == status)
    if incident_id is not None:
        query = query.where(c.incident_id == incident_id)
    if owner:
        query = query.where(c.owner == owner)
    return query


def list_followups(
    conn: Connection,
    now: float,
    status: Status = "open",
    incident_id: int | None = None,
    owner: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    query = paging.window(_query(status, incident_id, owner), limit, offset)
    return [view(dict(r), now) for r in conn.execute(query).mappings()]


def count_followups(
    conn: Connection,
    status: Status = "open",
    incident_id: int | None = None,
    owner: str | None = None,
) -> int:
    return paging.count(conn, _query(status, incident_id, owner))
