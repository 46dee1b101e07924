"""/api/v1/security/report: the security report as JSON, Markdown or a self-contained HTML page.

GET is a read (a viewer may): it records nothing, so "since the last report" stays where it
was. POST generates a report the way `nachtwacht security report` does (a responder): it is
recorded in the audit log (`security.report`) and the next report compares with it.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse

from nachtwacht.auth.deps import actor
from nachtwacht.security import report as security_report
from nachtwacht.security.report_render import as_json, html, markdown
from nachtwacht.web.headers import policy_for_inline_styles
from nachtwacht.web.state import runtime_of

router = APIRouter(prefix="/api/v1", tags=["security"])
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


@router.get("/security/report", response_model=None)
async def get_report(
    request: Request, days: Days = 7, fmt: Format = "json"
) -> Response | dict[str, Any]:
    """Findings by rule and address, top addresses and paths, logins, blocks, Nachtwacht's own
    audit events, what changed since the last report, and the detector's health (JSON times
    as ISO 8601 UTC). A read: it records nothing."""
    return await _report(request, days, fmt, None)


@router.post("/security/report", response_model=None)
async def generate_report(
    request: Request, days: Days = 7, fmt: Format = "json"
) -> Response | dict[str, Any]:
    """The same report, generated and recorded (audit `security.report`): the next report's
    "what changed" compares with this one."""
    return await _report(request, days, fmt, actor(request))
