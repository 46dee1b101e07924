"""/api/v1 routes for reviews: the review document, its fields, follow-ups, the monthly report."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from nachtwacht.auth.deps import actor
from nachtwacht.config import limits
from nachtwacht.reviews import document, followups, monthly, postmortem, service
from nachtwacht.web.headers import policy_for_inline_styles
from nachtwacht.web.pagination import Page, page, set_headers
from nachtwacht.web.state import runtime_of

router = APIRouter(prefix="/api/v1", tags=["reviews"])
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
T = TypeVar("T")
FIELD_DOC = "empty string clears it; leave it out to keep it"


async def _db(request: Request, work: Callable[[Connection, Any, float], T], *, write: bool) -> T:
    rt = runtime_of(request)

    def run() -> T:
        with rt.store.begin() if write else rt.store.connect() as conn:
            return work(conn, rt, rt.clock.now())

    return await asyncio.to_thread(run)


class Fields(BaseModel):
    root_cause: str | None = Field(None, max_length=service.MAX_FIELD, description=FIELD_DOC)
    contributing_factors: str | None = Field(
        None, max_length=service.MAX_FIELD, description=FIELD_DOC
    )
    impact: str | None = Field(None, max_length=service.MAX_FIELD, description=FIELD_DOC)
    lessons: str | None = Field(None, max_length=service.MAX_FIELD, description=FIELD_DOC)


class NewFollowup(BaseModel):
    incident_id: int = Field(ge=1, le=2**31 - 1)
    title: str = Field(min_length=3, max_length=limits.TITLE)
    owner: str = Field(max_length=limits.CONTACT, description="a contact id from people.contacts")
    due: str = Field(
        description="YYYY-MM-DD (when business hours open that day), an ISO date-time, "
        "or a duration from now such as 7d"
    )


@router.get("/incidents/{incident_id}/postmortem")
async def get_review(request: Request, incident_id: RowId) -> dict[str, Any]:
    """The review of an incident: times, figures, downtime, notifications, runbooks, evidence,
    checklist, the responders' fields, follow-ups and deadlines (times as ISO 8601)."""
    return await _db(
        request,
        lambda conn, rt, now: postmortem.as_json(
            postmortem.build(conn, rt.settings, incident_id, now)
        ),
        write=False,
    )


@router.put("/incidents/{incident_id}/postmortem")
async def put_fields(request: Request, incident_id: RowId, body: Fields) -> dict[str, Any]:
    """Fill in root cause, contributing factors, impact and lessons (recorded on the timeline)."""
    who = actor(request)
    values = body.model_dump(exclude_unset=True)
    fields = await _db(
        request,
        lambda conn, rt, now: service.set_fields(conn, incident_id, values, who, now),
        write=True,
    )
    return postmortem.as_json(fields)


@router.get("/incidents/{incident_id}/review", response_model=None)
async def review_document(
    request: Request,
    incident_id: RowId,
    fmt: Literal["md", "html", "json"] = Query(
        "md", alias="format", description="md, html or json"
    ),
) -> Response | dict[str, Any]:
    """The review document as Markdown, a self-contained HTML page, or JSON."""

    def work(conn: Connection, rt: Any, now: float) -> Response | dict[str, Any]:
        review = postmortem.build(conn, rt.settings, incident_id, now)
        if fmt == "json":
            return postmortem.as_json(review)
        if fmt == "html":
            text = document.html(review, rt.settings)
            # its own styles are inside it (it must open offline): allowed by hash only
            csp = {"Content-Security-Policy": policy_for_inline_styles(text)}
            return HTMLResponse(text, headers=csp)
        return PlainTextResponse(
            document.markdown(review, rt.settings), media_type="text/markdown; charset=utf-8"
        )

    return await _db(request, work, write=False)


@router.get("/followups")
async def list_followups(
    request: Request,
    response: Response,
    status: Literal["open", "done", "all"] = "open",
    incident: int | None = Query(None, ge=1, le=2**31 - 1),
    owner: str | None = Query(None, max_length=64),
    pg: Page = Depends(page),
) -> list[dict[str, Any]]:
    """Improvement actions, soonest due first; `overdue` marks open ones past their date."""

    def work(conn: Connection, rt: Any, now: float) -> list[dict[str, Any]]:
        set_headers(request, response, pg, followups.count_followups(conn, status, incident, owner))
        return followups.list_followups(conn, now, status, incident, owner, pg.limit, pg.offset)

    return await _db(request, work, write=False)


@router.post("/followups", status_code=201)
async def add_followup(request: Request, body: NewFollowup) -> dict[str, Any]:
    """Add an improvement action to an incident's review; its owner is reminded when due."""
    who = actor(request)

    def work(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        due = service.parse_due(body.due, now, rt.settings.zone, rt.settings.business_hours.start)
        return followups.add(
            conn,
            rt.settings,
            body.incident_id,
            title=body.title,
            owner=body.owner,
            due_at=due,
            actor=who,
            now=now,
        )

    return await _db(request, work, write=True)


@router.post("/followups/{followup_id}/done")
async def followup_done(request: Request, followup_id: RowId) -> dict[str, Any]:
    who = actor(request)
    return await _db(
        request,
        lambda conn, rt, now: followups.complete(conn, followup_id, who, now),
        write=True,
    )


@router.get("/reports/monthly")
async def monthly_report(
    request: Request,
    month: str | None = Query(None, pattern=r"^\d{4}-\d{2}$", description="YYYY-MM; default now"),
) -> dict[str, Any]:
    """Incidents by severity, MTTA, MTTR, SLA compliance, uptime per component, top error
    issues and open follow-ups for one month in site time."""

    def work(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        data = monthly.report(conn, rt.settings, month, now)
        data["history"] = monthly.history(conn, rt.settings, month, now)
        return postmortem.as_json(data)

    return await _db(request, work, write=False)
