"""The on-call page: who is on call now and next, and the overrides."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import Connection

from nachtwacht.auth.deps import access
from nachtwacht.oncall import service as oncall
from nachtwacht.web.render import _show

router = APIRouter(include_in_schema=False, dependencies=[Depends(access)])


@router.get("/oncall", response_class=HTMLResponse)
async def oncall_page(request: Request) -> HTMLResponse:
    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        return {
            "oncall": oncall.overview(conn, rt.settings, now),
            "overrides": oncall.list_overrides(conn, rt.settings, now),
        }

    return await _show(request, "oncall.html", build)
