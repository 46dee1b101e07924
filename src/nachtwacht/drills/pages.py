"""The Drills page (`/drills`): the schedule, the scenarios, the drills run; and a drill's
report (`/drills/{id}`). Mounted in web/app.py behind `access`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup
from sqlalchemy import Connection

from nachtwacht.auth.deps import access
from nachtwacht.drills import report, scenarios, schedule, service
from nachtwacht.web.render import PageError, RowId, _show

router = APIRouter(include_in_schema=False, dependencies=[Depends(access)])
SHOWN = 50


@router.get("/drills", response_class=HTMLResponse)
async def drills_page(request: Request) -> HTMLResponse:
    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        return {
            "schedule": schedule.status(conn, rt.settings, now),
            "scenarios": list(scenarios.builtin().values()),
            "drills": service.list_drills(conn, SHOWN),
        }

    return await _show(request, "drills.html", build)


@router.get("/drills/{drill_id}", response_class=HTMLResponse)
async def drill_page(request: Request, drill_id: RowId) -> HTMLResponse:
    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        drill = service.get(conn, drill_id)
        if drill is None:
            raise PageError(f"There is no drill #{drill_id}.")
        found = scenarios.get(drill["scenario"])
        title = found.title if found else drill["scenario"]
        return {
            "drill": drill,
            "report_html": Markup(report.fragment(drill, title, rt.settings.zone)),
        }

    return await _show(request, "drill.html", build)
