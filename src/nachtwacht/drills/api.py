"""/api/v1 routes for drills: list (with scenarios and the schedule), one drill, its report,
start one, end one. Reading needs a viewer; starting and ending a responder (router rule)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from nachtwacht.auth.deps import actor
from nachtwacht.drills import report, scenarios, schedule, service
from nachtwacht.web.headers import policy_for_inline_styles
from nachtwacht.web.pagination import Page, pager, set_headers
from nachtwacht.web.state import runtime_of

router = APIRouter(prefix="/api/v1", tags=["drills"])
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
T = TypeVar("T")
page = pager(50, 500)


async def _db(request: Request, work: Callable[[Connection, Any, float], T], *, write: bool) -> T:
    rt = runtime_of(request)

    def run() -> T:
        with rt.store.begin() if write else rt.store.connect() as conn:
            return work(conn, rt, rt.clock.now())

    result = await asyncio.to_thread(run)
    if write:
        rt.wake_outbox()
    return result


class NewDrill(BaseModel):
    scenario: str = Field(max_length=64, description="a scenario name, GET /api/v1/drills")
    severity: int | None = Field(None, ge=1, le=3, description="overrides the scenario's")
    schedule: str = Field("adhoc", max_length=32, description="the schedule it fulfils, or adhoc")
    confirm: bool = Field(
        False, description="the scenario's real steps (read-only checks) may run for real"
    )


@router.get("/drills")
async def list_drills(
    request: Request, response: Response, pg: Page = Depends(page)
) -> dict[str, Any]:
    """Drills newest first (one page), the scenarios, and the schedule (due, overdue, last)."""

    def work(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        set_headers(request, response, pg, service.count_drills(conn))
        return {
            "drills": service.list_drills(conn, pg.limit, pg.offset),
            "scenarios": [s.model_dump() for s in scenarios.builtin().values()],
            "schedule": schedule.status(conn, rt.settings, now),
        }

    return await _db(request, work, write=False)


@router.get("/drills/{drill_id}")
async def show_drill(request: Request, drill_id: RowId) -> dict[str, Any]:
    """One drill: its plan of runbook steps and, once ended, its figures against the targets."""
    return await _db(request, lambda conn, rt, now: service.require(conn, drill_id), write=False)


@router.get("/drills/{drill_id}/report", response_model=None)
async def drill_report(
    request: Request,
    drill_id: RowId,
    fmt: Literal["md", "html"] = Query("md", alias="format", description="md or html"),
) -> Response:
    """The drill report as Markdown or a self-contained HTML page."""

    def work(conn: Connection, rt: Any, now: float) -> Response:
        drill = service.require(conn, drill_id)
        found = scenarios.get(drill["scenario"])
        title = found.title if found else drill["scenario"]
        if fmt == "html":
            text = report.html(drill, title, rt.settings.zone)
            csp = {"Content-Security-Policy": policy_for_inline_styles(text)}
            return HTMLResponse(text, headers=csp)
        return PlainTextResponse(
            report.markdown(drill, title, rt.settings.zone),
            media_type="text/markdown; charset=utf-8",
        )

    return await _db(request, work, write=False)


@router.post("/drills", status_code=201)
async def start_drill(request: Request, body: NewDrill) -> dict[str, Any]:
    """Start a drill: its synthetic alert pages through the real pipeline, marked DRILL."""
    who = actor(request)

    def work(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        return service.run(
            conn,
            rt.settings,
            body.scenario,
            now,
            who,
            severity=body.severity,
            kind=body.schedule,
            confirmed=body.confirm,
        )

    drill = await _db(request, work, write=True)
    rt = runtime_of(request)
    run_id = await service.attach_runbook(rt.store, rt.settings, rt.clock, drill, who)
    return {**drill, "runbook_run": run_id}


@router.post("/drills/{drill_id}/end")
async def end_drill(request: Request, drill_id: RowId) -> dict[str, Any]:
    """End a drill (resolving its incident if still open) and store its figures."""
    who = actor(request)
    return await _db(
        request,
        lambda conn, rt, now: service.end(conn, rt.settings, drill_id, who, now),
        write=True,
    )
