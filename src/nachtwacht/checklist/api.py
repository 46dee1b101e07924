"""/api/v1/checklist: run the restoration checklist inside the server, list recorded runs."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from nachtwacht.auth.deps import actor
from nachtwacht.checklist import service
from nachtwacht.checklist.items import Context
from nachtwacht.incidents.service import IncidentError
from nachtwacht.web.pagination import Page, page, set_headers
from nachtwacht.web.state import runtime_of

router = APIRouter(prefix="/api/v1", tags=["checklist"])


class RunChecklist(BaseModel):
    incident_id: int | None = Field(
        None, ge=1, le=2**31 - 1, description="record the run on this incident's timeline"
    )


def context(request: Request, incident_id: int | None) -> Context:
    """A checklist run by the server itself: the APIs are asked in-process, of this very app."""
    return Context.in_server(runtime_of(request), actor(request), incident_id, request.app)


@router.post("/checklist", status_code=201)
async def run_checklist(request: Request, body: RunChecklist | None = None) -> dict[str, Any]:
    """Run every item of the Service Restoration Checklist now; the run is recorded.

    Answers 201 with the run whether it passed or not: `passed` and each item's `ok` say.
    """
    ctx = context(request, body.incident_id if body else None)
    try:
        run = await service.verify(ctx)
    except IncidentError as exc:
        # the API's field is the body's incident_id, not the incident's id
        raise IncidentError(exc.message, "incident_id", exc.kind) from None
    runtime_of(request).wake_outbox()
    return run


@router.get("/checklist/runs")
async def list_runs(
    request: Request,
    response: Response,
    incident: int | None = Query(None, ge=1, le=2**31 - 1, description="only this incident"),
    pg: Page = Depends(page),
) -> list[dict[str, Any]]:
    """Recorded checklist runs, newest first, with each item's outcome."""
    rt = runtime_of(request)

    def work() -> list[dict[str, Any]]:
        with rt.store.connect() as conn:
            set_headers(request, response, pg, service.count_runs(conn, incident))
            return service.list_runs(conn, incident, pg.limit, pg.offset)

    return await asyncio.to_thread(work)
