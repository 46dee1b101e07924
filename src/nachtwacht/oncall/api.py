"""/api/v1 routes for people: who is on call, rotation calendars, overrides and contacts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from nachtwacht.auth.deps import IGNORED_ACTOR, actor, require
from nachtwacht.config import limits
from nachtwacht.engine.runtime import Runtime
from nachtwacht.oncall import service, turns, verify
from nachtwacht.web.errors import ApiError
from nachtwacht.web.state import runtime_of

router = APIRouter(prefix="/api/v1", tags=["oncall"])

# row ids are 32-bit in every store (MariaDB INT); a larger one is a 422 naming the parameter,
# not an integer overflow in the driver
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
T = TypeVar("T")
TIME_DOC = "ISO 8601, 'YYYY-MM-DD HH:MM' in the site timezone, or epoch seconds"


def _rt(request: Request) -> Runtime:
    return runtime_of(request)


async def _db(
    request: Request, work: Callable[[Connection, Runtime, float], T], *, write: bool
) -> T:
    """Run `work(conn, runtime, now)` off the event loop, in a transaction when it writes."""
    rt = _rt(request)

    def run() -> T:
        with rt.store.begin() if write else rt.store.connect() as conn:
            return work(conn, rt, rt.clock.now())

    return await asyncio.to_thread(run)


MAX_SCHEDULE = 366 * 86400.0


def _when(rt: Runtime, value: str | None, field: str, default: float) -> float:
    if value is None:
        return default
    return service.parse_time(value, rt.settings.zone, field)


@router.get("/oncall")
async def get_oncall(
    request: Request, at: str | None = Query(None, description=f"default now; {TIME_DOC}")
) -> dict[str, Any]:
    """Who is on call in each rotation and next, the protocol roles and external support."""
    rt = _rt(request)
    when = _when(rt, at, "at", rt.clock.now())
    return await _db(
        request, lambda conn, rt, _now: service.overview(conn, rt.settings, when), write=False
    )


@router.get("/oncall/overrides")
async def list_overrides(
    request: Request,
    rotation: str | None = None,
    include_past: bool = Query(False, description="include ended overrides"),
) -> list[dict[str, Any]]:
    return await _db(
        request,
        lambda conn, rt, now: service.list_overrides(
            conn, rt.settings, now, rotation, include_past
        ),
        write=False,
    )


@router.get("/oncall/{rotation}/schedule")
async def get_schedule(
    request: Request,
    rotation: str,
    since: str | None = Query(None, description=f"default now; {TIME_DOC}"),
    until: str | None = Query(None, description=f"default since + 28 days; {TIME_DOC}"),
) -> list[dict[str, Any]]:
    """The rotation's turns from `since` to `until`, overrides applied (for a calendar)."""
    rt = _rt(request)
    start = _when(rt, since, "since", rt.clock.now())
    end = _when(rt, until, "until", start + 28 * 86400)
    # a calendar needs no more than a year (parse_time keeps both within 1970..9000)
    if not start < end <= start + MAX_SCHEDULE:
        raise ApiError(422, "until must be after since and at most 366 days later", "until")
    return await _db(
        request,
        lambda conn, rt, _now: service.schedule(conn, rt.settings, rotation, start, end),
        write=False,
    )


class NewOverride(BaseModel):
    rotation: str = Field(max_length=limits.CONTACT)
    contact: str = Field(max_length=limits.CONTACT)
    # datetimes without an offset are site time; numbers are epoch seconds
    starts_at: datetime | None = Field(None, description="default now")
    ends_at: datetime
    actor: str = Field("api", max_length=120, deprecated=True, description=IGNORED_ACTOR)


@router.post("/oncall/overrides", status_code=201)
async def add_override(request: Request, body: NewOverride) -> dict[str, Any]:
    who = actor(request)

    def work(conn: Connection, rt: Runtime, now: float) -> dict[str, Any]:
        zone = rt.settings.zone
        starts_at = turns.to_ts(body.starts_at, zone) if body.starts_at else now
        new_id = service.add_override(
            conn,
            rt.settings,
            body.rotation,
            body.contact,
            starts_at,
            turns.to_ts(body.ends_at, zone),
            who,
            now,
        )
        rows = service.list_overrides(conn, rt.settings, now, body.rotation)
        return next(o for o in rows if o["id"] == new_id)

    return await _db(request, work, write=True)


@router.delete("/oncall/overrides/{override_id}")
async def delete_override(request: Request, override_id: RowId) -> dict[str, Any]:
    row = await _db(
        request, lambda conn, _rt, _now: service.delete_override(conn, override_id), write=True
    )
    return {"deleted": override_id, "rotation": row["rotation"], "contact": row["contact"]}


@router.get("/contacts")
async def list_contacts(request: Request) -> dict[str, Any]:
    """Contacts with their roles and backups, and external support contacts."""
    settings = _rt(request).settings
    return {
        "contacts": [service.contact_public(c, settings) for c in settings.people.contacts],
        "external": [e.model_dump() for e in settings.people.external],
    }


@router.get("/contacts/verification")
async def contacts_verification(request: Request) -> dict[str, Any]:
    """Each contact's personal channels: verified | pending | stale | unverified, and when."""
    entries = await _db(
        request, lambda conn, rt, now: verify.state(conn, rt.settings, now), write=False
    )
    cfg = _rt(request).settings.people.verification
    return {"every": cfg.every, "link_valid": cfg.link_valid, "channels": entries}


class VerifyRequest(BaseModel):
    contact: str | None = Field(None, max_length=limits.CONTACT, description="default: all")
    channel: str | None = Field(
        None, max_length=limits.CONTACT, description="a channel name or kind; default: all"
    )


@router.post("/contacts/verify", status_code=201, dependencies=[Depends(require("admin"))])
async def contacts_verify(request: Request, body: VerifyRequest) -> dict[str, Any]:
    """Queue a confirm link to each contact on each channel that reaches them (the outbox sends)."""
    sent = await _db(
        request,
        lambda conn, rt, now: verify.send(
            conn, rt.settings, now, contact=body.contact, channel=body.channel
        ),
        write=True,
    )
    _rt(request).wake_outbox()
    return {"sent": sent}
