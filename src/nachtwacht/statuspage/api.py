"""/api/v1/statuspage: notices (draft, edit, approve, discard) and subscribers, behind the login.

The public side (the page, feed, subscribing) is in pages.py: it has no login at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from nachtwacht.auth.deps import actor, principal_of, require
from nachtwacht.statuspage import notices, subscribers
from nachtwacht.statuspage.service import BODY_MAX, TITLE_MAX, notice_view
from nachtwacht.web.state import runtime_of

router = APIRouter(prefix="/api/v1/statuspage", tags=["statuspage"])
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
T = TypeVar("T")
Status = Literal["investigating", "identified", "monitoring", "resolved"]
Names = Annotated[list[Annotated[str, Field(max_length=80)]], Field(max_length=50)]


async def _db(request: Request, work: Callable[[Connection, Any, float], T], *, write: bool) -> T:
    rt = runtime_of(request)

    def run() -> T:
        with rt.store.begin() if write else rt.store.connect() as conn:
            return work(conn, rt, rt.clock.now())

    out = await asyncio.to_thread(run)
    if write:
        rt.wake_outbox()
        cache = getattr(request.app.state, "statuspage_cache", None)
        if cache is not None:
            cache.clear()
    return out


class NewNotice(BaseModel):
    incident_id: int = Field(ge=1, le=2**31 - 1)
    kind: Literal["notice", "update", "resolved"] | None = Field(
        None, description="unset: notice first, then update; resolved once the incident is"
    )
    title: str | None = Field(None, max_length=TITLE_MAX)
    body: str | None = Field(None, max_length=BODY_MAX)
    public_status: Status | None = None
    components: Names | None = Field(None, description="public component names")


class NoticeEdit(BaseModel):
    title: str | None = Field(None, max_length=TITLE_MAX)
    body: str | None = Field(None, max_length=BODY_MAX)
    public_status: Status | None = None
    components: Names | None = None


class NewWebhook(BaseModel):
    url: str = Field(max_length=300, description="where each published notice is POSTed")


@router.get("/notices")
async def list_notices(
    request: Request,
    incident_id: int | None = Query(None, ge=1, le=2**31 - 1),
    state: Literal["draft", "published", "discarded"] | None = None,
) -> list[dict[str, Any]]:
    """Notices, newest first, with who drafted and approved them."""
    return await _db(
        request,
        lambda conn, rt, now: notices.list_notices(conn, incident_id, state),
        write=False,
    )


@router.post("/notices", status_code=201)
async def draft(request: Request, body: NewNotice) -> dict[str, Any]:
    """Draft a notice from the customer notice template; given fields replace its parts."""
    who = actor(request)
    row = await _db(
        request,
        lambda conn, rt, now: notices.draft(
            conn,
            rt.settings,
            body.incident_id,
            who,
            now,
            **body.model_dump(exclude={"incident_id"}),
        ),
        write=True,
    )
    return notice_view(row, internal=True)


@router.patch("/notices/{notice_id}")
async def edit(request: Request, notice_id: RowId, body: NoticeEdit) -> dict[str, Any]:
    row = await _db(
        request,
        lambda conn, rt, now: notices.edit(
            conn, rt.settings, notice_id, now, **body.model_dump(exclude_unset=True)
        ),
        write=True,
    )
    return notice_view(row, internal=True)


@router.post("/notices/{notice_id}/approve")
async def approve(request: Request, notice_id: RowId) -> dict[str, Any]:
    """Publish a draft (its incident's commander or an admin); subscribers are queued."""
    who = actor(request)
    principal = principal_of(request)
    role = principal.role if principal is not None else "viewer"
    row, queued = await _db(
        request,
        lambda conn, rt, now: notices.approve(conn, rt.settings, notice_id, who, role, now),
        write=True,
    )
    return notice_view(row, internal=True) | {"queued": queued}


@router.post("/notices/{notice_id}/discard")
async def discard(request: Request, notice_id: RowId) -> dict[str, Any]:
    who = actor(request)
    row = await _db(
        request, lambda conn, rt, now: notices.discard(conn, notice_id, who, now), write=True
    )
    return notice_view(row, internal=True)


@router.get("/subscribers")
async def subscriber_counts(request: Request) -> dict[str, Any]:
    """Subscribers by kind and state; an admin also sees the webhooks (addresses never)."""
    principal = principal_of(request)
    admin = principal is not None and principal.allows("admin")

    def work(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"counts": subscribers.counts(conn)}
        if admin:
            out["webhooks"] = subscribers.list_webhooks(conn)
        return out

    return await _db(request, work, write=False)


@router.post("/webhooks", status_code=201, dependencies=[Depends(require("admin"))])
async def add_webhook(request: Request, body: NewWebhook) -> dict[str, Any]:
    """Add a subscriber's webhook (admins only: the server will POST there)."""
    row = await _db(
        request,
        lambda conn, rt, now: subscribers.add_webhook(conn, rt.settings, body.url, now),
        write=True,
    )
    return {"id": row["id"], "url": row["address"], "state": row["state"]}


@router.delete(
    "/subscribers/{subscriber_id}", status_code=204, dependencies=[Depends(require("admin"))]
)
async def remove(request: Request, subscriber_id: RowId) -> None:
    await _db(
        request,
        lambda conn, rt, now: subscribers.remove(conn, subscriber_id, now),
        write=True,
    )
