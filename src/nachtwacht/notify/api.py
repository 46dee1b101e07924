"""/api/v1 routes for notifications: send a test message, list the outbox."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from nachtwacht.config import limits
from nachtwacht.notify.queries import STATUSES, count_outbox, list_outbox
from nachtwacht.notify.testmessage import send_test
from nachtwacht.web.errors import ApiError
from nachtwacht.web.pagination import Page, page, set_headers
from nachtwacht.web.state import runtime_of

router = APIRouter(prefix="/api/v1", tags=["notify"])


class NotifyTestBody(BaseModel):
    contact: str = Field(max_length=limits.CONTACT, description="A contact id from people.contacts")
    wait: float = Field(default=10.0, ge=0, le=60, description="Seconds to keep retrying")


@router.post("/notify/test")
async def notify_test(request: Request, body: NotifyTestBody) -> dict[str, Any]:
    """Send a test message to one contact on every channel that reaches them."""
    rt = runtime_of(request)
    results = await send_test(rt.settings, rt.store, rt.clock, body.contact, body.wait)
    return {
        "contact": body.contact,
        "ok": all(r["status"] == "sent" for r in results),
        "channels": results,
    }


@router.get("/outbox")
async def get_outbox(
    request: Request,
    response: Response,
    status: str | None = Query(None, description="pending | sending | sent | dead"),
    incident: int | None = Query(
        None, ge=1, le=2**31 - 1, description="only rows of this incident"
    ),
    pg: Page = Depends(page),
) -> list[dict[str, Any]]:
    """The newest outbox rows, with attempts, next attempt and last error."""
    if status is not None and status not in STATUSES:
        raise ApiError(422, f"status must be one of {', '.join(STATUSES)}", "status")
    rt = runtime_of(request)

    def work() -> list[dict[str, Any]]:
        rows = list_outbox(rt.store, status, pg.limit, incident, pg.offset)
        set_headers(request, response, pg, count_outbox(rt.store, status, incident))
        return rows

    return await asyncio.to_thread(work)
