"""The Security page (`/security`): the security report for 1, 7 or 30 days, the blocks in force,
recent findings with their incidents, and the detector's health. A viewer may read it.

Viewing it does not record a report (`report.record`): "what changed since the last report"
stays tied to reports someone generated and kept.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import Connection

from nachtwacht.auth.deps import access
from nachtwacht.security import report as security_report
from nachtwacht.security.report_render import Render
from nachtwacht.web.render import _show

router = APIRouter(include_in_schema=False, dependencies=[Depends(access)])
CHOICES = (1, 7, 30)


@router.get("/security", response_class=HTMLResponse)
async def security_page(
    request: Request,
    days: Annotated[int, Query(ge=1, le=366, description="Days up to now.")] = 7,
) -> HTMLResponse:
    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        data = security_report.build(conn, now, days, rt.settings.security)
        choices = sorted({*CHOICES, days})
        return {
            "report": data,
            "r": Render(rt.settings.zone, now),
            "links": True,
            "choices": choices,
        }

    return await _show(request, "security.html", build)
