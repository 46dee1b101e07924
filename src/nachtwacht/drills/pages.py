"""The Drills page (`/drills`): the schedule, the scenarios, the drills run; and a drill's
report (`/drills/{id}`). Mounted in web/app.py behind `access`."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup
from sqlalchemy import Connection

from nachtwacht.auth.deps import access, actor
from nachtwacht.drills import report, scenarios, schedule, service
from nachtwacht.problems import Problem
from nachtwacht.web.render import PageError, RowId, _form, _redirect, _show
from nachtwacht.web.state import runtime_of

router = APIRouter(include_in_schema=False, dependencies=[Depends(access)])
SHOWN = 50


def _build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
    return {
        "schedule": schedule.status(conn, rt.settings, now),
        "scenarios": list(scenarios.builtin().values()),
        "drills": service.list_drills(conn, SHOWN),
    }


@router.get("/drills", response_class=HTMLResponse)
async def drills_page(request: Request) -> HTMLResponse:
    return await _show(request, "drills.html", _build)


@router.post("/drills")
async def start(request: Request) -> Response:
    """Start a drill of the chosen scenario (a responder; the form carries the CSRF token)."""
    form = await _form(request)
    rt = runtime_of(request)
    who = actor(request)

    def work() -> dict[str, Any]:
        with rt.store.begin() as conn:
            return service.run(
                conn,
                rt.settings,
                form.get("scenario", "")[:64],
                rt.clock.now(),
                who,
                kind=form.get("schedule", "adhoc")[:32] or "adhoc",
                confirmed=form.get("confirm") == "yes",
            )

    try:
        drill = await asyncio.to_thread(work)
    except Problem as exc:
        return await _show(request, "drills.html", _build, status=exc.http_status, error=str(exc))
    rt.wake_outbox()
    await service.attach_runbook(rt.store, rt.settings, rt.clock, drill, who)
    return _redirect(f"/drills/{drill['id']}")


@router.get("/drills/{drill_id}", response_class=HTMLResponse)
async def drill_page(request: Request, drill_id: RowId) -> HTMLResponse:
    return await _show(request, "drill.html", lambda conn, rt, now: _drill_view(conn, rt, drill_id))


def _drill_view(conn: Connection, rt: Any, drill_id: int) -> dict[str, Any]:
    drill = service.get(conn, drill_id)
    if drill is None:
        raise PageError(f"There is no drill #{drill_id}.")
    found = scenarios.get(drill["scenario"])
    title = found.title if found else drill["scenario"]
    return {
        "drill": drill,
        "report_html": Markup(report.fragment(drill, title, rt.settings.zone)),
    }


@router.post("/drills/{drill_id}/end")
async def end(request: Request, drill_id: RowId) -> Response:
    """End a running drill from its page (a responder): its incident resolved if still open,
    its figures stored; then back to its report."""
    await _form(request)  # the CSRF token is checked on the way in; nothing else is read
    rt = runtime_of(request)
    who = actor(request)

    def work() -> dict[str, Any]:
        with rt.store.begin() as conn:
            return service.end(conn, rt.settings, drill_id, who, rt.clock.now())

    try:
        await asyncio.to_thread(work)
    except Problem as exc:
        return await _show(
            request,
            "drill.html",
            lambda conn, rt, now: _drill_view(conn, rt, drill_id),
            status=exc.http_status,
            error=str(exc),
        )
    rt.wake_outbox()
    return _redirect(f"/drills/{drill_id}")
