"""/api/v1/security/report: the security report as JSON (a viewer may read it).

A read: it does not record a report, so it does not move "since the last report"
(`nachtwacht security report` does).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from nachtwacht.security import report as security_report
from nachtwacht.security.report_render import as_json
from nachtwacht.web.state import runtime_of

router = APIRouter(prefix="/api/v1", tags=["security"])


@router.get("/security/report")
async def get_report(
    request: Request,
    days: Annotated[int, Query(ge=1, le=366, description="Days up to now.")] = 7,
) -> dict[str, Any]:
    """Findings by rule and address, top addresses and paths, logins, blocks, Nachtwacht's own
    audit events, what changed since the last report, and the detector's health (times as
    ISO 8601 UTC)."""
    rt = runtime_of(request)

    def run() -> dict[str, Any]:
        now = rt.clock.now()
        with rt.store.connect() as conn:
            data = security_report.build(conn, now, days, rt.settings.security)
        return as_json(data)

    return await asyncio.to_thread(run)
