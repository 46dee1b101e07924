"""/api/v1/security: the blocks (a viewer reads, a responder blocks and unblocks) and the lockdown.

A change commits its rows first, then applies them to nftables in the same request (the
`security-respond` module would within `security.respond.interval`, and does if this process
dies in between); the answer is the row after that, so `state` says what the firewall took:
`active`, or `failed` with nft's `error` (answered 502). Refusals are 4xx and change nothing.

/api/v1/security/report: the security report as JSON, Markdown or a self-contained HTML page.

GET is a read (a viewer may): it records nothing, so "since the last report" stays where it
was. POST generates a report the way `nachtwacht security report` does (a responder): it is
recorded in the audit log (`security.report`) and the next report compares with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from nachtwacht.auth.deps import actor, client_ip
from nachtwacht.config import limits
from nachtwacht.durations import parse_duration
from nachtwacht.security import applier as applier_mod
from nachtwacht.security import blocks
from nachtwacht.security import report as security_report
from nachtwacht.security.firewall import Firewall
from nachtwacht.security.report_render import as_json, html, markdown
from nachtwacht.web.headers import policy_for_inline_styles
from nachtwacht.web.pagination import Page, page, set_headers
from nachtwacht.web.state import runtime_of

router = APIRouter(prefix="/api/v1/security", tags=["security"])

# tests put a recording firewall here; None: nft as security.respond says
FIREWALL: Firewall | None = None
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
IncidentId = Annotated[int | None, Field(None, ge=1, le=2**31 - 1)]
DurationValue = Annotated[
    str | float | None,
    Field(None, description="How long: 30m, 1h, 1d or seconds (default: security.respond)."),
]
T = TypeVar("T")


class BlockIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str = Field(min_length=1, max_length=64, description="An address or a network.")
    duration: DurationValue = None
    reason: str | None = Field(None, max_length=limits.TEXT)
    incident_id: IncidentId = None
    force: bool = Field(False, description="Block even loopback, this host or the allow-list.")


class LockdownIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(min_length=1, max_length=20)
    allow: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=100
    )
    duration: DurationValue = None
    reason: str | None = Field(None, max_length=limits.TEXT)
    incident_id: IncidentId = None


def _seconds(value: str | float | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise blocks.BlockError(f"duration: {exc}", "duration") from None


async def _in_store(
    request: Request, work: Callable[[Connection, Any, float], T], write: bool
) -> T:
    rt = runtime_of(request)

    def run() -> T:
        with rt.store.begin() if write else rt.store.connect() as conn:
            return work(conn, rt, rt.clock.now())

    return await asyncio.to_thread(run)


async def _apply(request: Request, ids: list[int], response: Response) -> list[dict[str, Any]]:
    """Apply these committed rows now and answer them as they are afterwards."""
    rt = runtime_of(request)
    firewall = FIREWALL or blocks.firewall_for(rt.settings.security.respond)
    applier = applier_mod.Applier(rt.store, firewall, rt.clock, zone=rt.settings.zone)
    done = await asyncio.to_thread(applier.run, ids)
    if done.errors:
        response.status_code = 502  # the firewall refused: the rows say so

    def read(conn: Connection, _rt: Any, now: float) -> list[dict[str, Any]]:
        return [blocks.get_block(conn, i, now) for i in ids]

    return await _in_store(request, read, write=False)


@router.get("/blocks")
async def list_blocks(
    request: Request,
    response: Response,
    all: bool = Query(False, description="The history too, not only the blocks in force."),
    pg: Page = Depends(page),
) -> list[dict[str, Any]]:
    def work(conn: Connection, _rt: Any, now: float) -> list[dict[str, Any]]:
        set_headers(request, response, pg, blocks.count_blocks(conn, include_all=all))
        return blocks.list_blocks(conn, now, include_all=all, limit=pg.limit, offset=pg.offset)

    return await _in_store(request, work, write=False)


@router.post("/blocks", status_code=201)
async def add_block(request: Request, response: Response, body: BlockIn) -> dict[str, Any]:
    """Block an address for a while (responder); the answer's `state` is the firewall's word."""
    who = actor(request)
    seconds = _seconds(body.duration)

    def work(conn: Connection, rt: Any, now: float) -> int:
        return blocks.block(
            conn,
            rt.settings.security.respond,
            body.address,
            duration=seconds,
            reason=body.reason,
            actor=who,
            now=now,
            incident_id=body.incident_id,
            force=body.force,
            ip=client_ip(request),
        )

    block_id = await _in_store(request, work, write=True)
    [view] = await _apply(request, [block_id], response)
    return view


@router.delete("/blocks/{block_id}")
async def delete_block(request: Request, response: Response, block_id: RowId) -> dict[str, Any]:
    """Lift a block now (the address's live blocks)."""
    who = actor(request)

    def work(conn: Connection, _rt: Any, now: float) -> list[int]:
        row = blocks.get_block(conn, block_id, now)
        if row["rule"] in blocks.LOCKDOWN_RULES:
            raise blocks.BlockError(
                f"block #{block_id} is part of the lockdown; end it with DELETE "
                "/api/v1/security/lockdown",
                "id",
                kind="conflict",
            )
        return blocks.unblock(conn, row["address"], who, now, client_ip(request))

    ids = await _in_store(request, work, write=True)
    views = await _apply(request, ids, response)
    return next((v for v in views if v["id"] == block_id), views[0])


@router.get("/lockdown")
async def show_lockdown(
    request: Request,
    all: bool = Query(False, description="Past lockdowns too."),
) -> list[dict[str, Any]]:
    """The lockdown's rows: its closed ports (rule `lockdown`) and allowed sources."""

    def work(conn: Connection, _rt: Any, now: float) -> list[dict[str, Any]]:
        return blocks.list_blocks(conn, now, include_all=all, lockdown_rows=True, limit=500)

    return await _in_store(request, work, write=False)


@router.post("/lockdown", status_code=201)
async def start_lockdown(
    request: Request, response: Response, body: LockdownIn
) -> list[dict[str, Any]]:
    """Close TCP ports to everyone but `allow`, security.respond.allow and loopback."""
    who = actor(request)
    seconds = _seconds(body.duration)

    def work(conn: Connection, rt: Any, now: float) -> list[int]:
        return blocks.lockdown(
            conn,
            rt.settings.security.respond,
            ports=body.ports,
            allow=body.allow,
            duration=seconds,
            reason=body.reason,
            actor=who,
            now=now,
            incident_id=body.incident_id,
            ip=client_ip(request),
        )

    ids = await _in_store(request, work, write=True)
    return await _apply(request, ids, response)


@router.delete("/lockdown")
async def end_lockdown(request: Request, response: Response) -> list[dict[str, Any]]:
    who = actor(request)

    def work(conn: Connection, _rt: Any, now: float) -> list[int]:
        return blocks.lockdown_off(conn, who, now, client_ip(request))

    ids = await _in_store(request, work, write=True)
    return await _apply(request, ids, response)


# ---- the report

Days = Annotated[int, Query(ge=1, le=366, description="Days up to now.")]
Format = Annotated[
    Literal["json", "md", "html"], Query(alias="format", description="json, md or html")
]


async def _report(
    request: Request, days: int, fmt: str, who: str | None
) -> Response | dict[str, Any]:
    rt = runtime_of(request)

    def run() -> Response | dict[str, Any]:
        now = rt.clock.now()
        with rt.store.begin() if who else rt.store.connect() as conn:
            built = security_report.build(conn, now, days, rt.settings.security)
            if who:
                security_report.record(conn, built, who, now, fmt)
        if fmt == "html":
            text = html(built, rt.settings.site, rt.settings.zone)
            # its own styles are inside it (it must open offline): allowed by hash only
            return HTMLResponse(
                text, headers={"Content-Security-Policy": policy_for_inline_styles(text)}
            )
        if fmt == "md":
            return PlainTextResponse(
                markdown(built, rt.settings.site, rt.settings.zone),
                media_type="text/markdown; charset=utf-8",
            )
        return as_json(built)

    return await asyncio.to_thread(run)


@router.get("/report", response_model=None)
async def get_report(
    request: Request, days: Days = 7, fmt: Format = "json"
) -> Response | dict[str, Any]:
    """Findings by rule and address, top addresses and paths, logins, blocks, Nachtwacht's own
    audit events, what changed since the last report, and the detector's health (JSON times
    as ISO 8601 UTC). A read: it records nothing."""
    return await _report(request, days, fmt, None)


@router.post("/report", response_model=None)
async def generate_report(
    request: Request, days: Days = 7, fmt: Format = "json"
) -> Response | dict[str, Any]:
    """The same report, generated and recorded (audit `security.report`): the next report's
    "what changed" compares with this one."""
    return await _report(request, days, fmt, actor(request))
