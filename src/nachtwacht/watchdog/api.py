"""JSON API routes under /api/v1 (protected by `access`, mounted in web/app.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from nachtwacht.spool import status as spool_status
from nachtwacht.web.state import runtime_of

router = APIRouter(prefix="/api/v1", tags=["watchdog"])


@router.get("/watchdog")
async def watchdog_status(request: Request) -> dict[str, Any]:
    """The store and spool, the dead man's switch and the store-down alarm, as serve sees them."""
    runtime = runtime_of(request)
    state = spool_status.snapshot(runtime, runtime.clock.now())
    watchdog = getattr(runtime, "watchdog", None)
    return {
        "store": state["store"],
        "spool": state["spool"],
        "summary": spool_status.describe(state),
        **(watchdog.snapshot() if watchdog is not None else {}),
    }
