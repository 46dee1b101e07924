"""JSON API routes under /api/v1 (protected by `access`, mounted in web/app.py).

GET  /api/v1/analytics/errors?days=7[&environment=production][&project_id=1][&fresh=true]
GET  /api/v1/analytics/forecast[?fresh=true]
GET  /api/v1/analytics/cache                    the cached results
DELETE /api/v1/analytics/cache[?pattern=glob]   {"cleared": n}
GET  /api/v1/baselines                          newest first
POST /api/v1/baselines                          {"name"?, "window"?: "24h"} → the baseline
GET  /api/v1/baselines/compare[?against=ID][&window=1h]
GET  /api/v1/baselines/{id}
GET  /api/v1/flags
PUT  /api/v1/flags                              {"<flag>": true|false, ...} (admin)
PUT  /api/v1/flags/{name}                       {"enabled": true|false} (admin)

In fallback mode the analytics routes answer 200 with {"disabled": true, "flag", "message"}.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from nachtwacht.analytics import cache, flags, service
from nachtwacht.analytics.baselines import get_baseline
from nachtwacht.analytics.patterns import MAX_DAYS
from nachtwacht.auth.deps import actor, client_ip, require
from nachtwacht.durations import parse_duration
from nachtwacht.web.errors import ApiError
from nachtwacht.web.state import runtime_of

router = APIRouter(prefix="/api/v1", tags=["analytics"])
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
T = TypeVar("T")
MAX_WINDOW = 30 * 86400.0


async def _run(request: Request, work: Callable[[Any, float], T]) -> T:
    """`work(runtime, now)` off the event loop; service refusals become JSON errors."""
    rt = runtime_of(request)
    return await asyncio.to_thread(lambda: work(rt, rt.clock.now()))


def _window(value: str | None, field: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ApiError(422, str(exc), field) from None
    if not 60 <= seconds <= MAX_WINDOW:
        raise ApiError(422, "the window must be between 1 minute and 30 days", field)
    return seconds


# ---------------------------------------------------------------------------- analytics


@router.get("/analytics/errors")
async def analytics_errors(
    request: Request,
    days: int = Query(7, ge=1, le=MAX_DAYS, description="The window, in days."),
    environment: list[str] | None = Query(None, description="Only these environments."),
    project_id: int | None = Query(None, ge=1, le=2**31 - 1),
    fresh: bool = Query(False, description="Compute now instead of using the cache."),
) -> dict[str, Any]:
    """Error patterns of the last `days` days (see docs/analytics.md for every key)."""
    return await _run(
        request,
        lambda rt, now: service.error_patterns(
            rt.store, rt.settings, now, days, environment, project_id, use_cache=not fresh
        ),
    )


@router.get("/analytics/forecast")
async def analytics_forecast(request: Request, fresh: bool = Query(False)) -> dict[str, Any]:
    """Disk-full forecasts, latency and failure-rate trends per probe, the error-rate trend."""
    return await _run(
        request, lambda rt, now: service.forecasts(rt.store, rt.settings, now, not fresh)
    )


@router.get("/analytics/cache")
async def cache_entries(request: Request) -> dict[str, Any]:
    def work(rt: Any, now: float) -> dict[str, Any]:
        with rt.store.connect() as conn:
            return {"entries": cache.entries(conn, now)}

    return await _run(request, work)


@router.delete("/analytics/cache")
async def cache_clear(
    request: Request,
    pattern: str | None = Query(None, max_length=200, description="A glob on the keys."),
) -> dict[str, Any]:
    cleared = await _run(request, lambda rt, now: service.clear_cache(rt.store, pattern))
    return {"cleared": cleared, "pattern": pattern}


# ---------------------------------------------------------------------------- baselines


class Capture(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=120)
    window: str | None = Field(
        None, max_length=32, description="A duration such as 24h (default from config)."
    )


@router.get("/baselines")
async def baselines_list(request: Request, limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
    items = await _run(request, lambda rt, now: service.list_baselines(rt.store, limit))
    return {"baselines": items}


@router.post("/baselines", status_code=201)
async def baselines_capture(request: Request, body: Capture | None = None) -> dict[str, Any]:
    body = body or Capture()
    who = actor(request)
    window = _window(body.window, "window")

    def work(rt: Any, now: float) -> dict[str, Any]:
        length = window or rt.settings.analytics.baseline.window
        return service.capture_baseline(rt.store, rt.settings, now, who, body.name, length)

    return await _run(request, work)


@router.get("/baselines/compare")
async def baselines_compare(
    request: Request,
    against: int | None = Query(None, ge=1, le=2**31 - 1),
    window: str | None = Query(None, description="Default: the baseline's own length."),
) -> dict[str, Any]:
    length = _window(window, "window")
    return await _run(
        request,
        lambda rt, now: service.compare_baseline(rt.store, rt.settings, now, against, length),
    )


@router.get("/baselines/{baseline_id}")
async def baselines_get(request: Request, baseline_id: RowId) -> dict[str, Any]:
    def work(rt: Any, now: float) -> dict[str, Any]:
        with rt.store.connect() as conn:
            return get_baseline(conn, baseline_id)

    return await _run(request, work)


# ---------------------------------------------------------------------------- flags


class FlagSwitch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool


@router.get("/flags")
async def flags_list(request: Request) -> dict[str, Any]:
    return {"flags": await _run(request, lambda rt, now: service.list_flags(rt.store))}


@router.put("/flags", dependencies=[Depends(require("admin"))])
async def flags_put(request: Request, body: dict[str, bool]) -> dict[str, Any]:
    """Switch several flags at once: {"disable_advanced_analytics": true, ...}."""
    for name in body:
        if name not in flags.FLAGS:
            raise ApiError(404, f"unknown flag '{name}'", name)
    who, ip = actor(request), client_ip(request)

    return {
        "flags": await _run(
            request, lambda rt, now: service.set_flags(rt.store, body, who, now, ip)
        )
    }


@router.put("/flags/{name}", dependencies=[Depends(require("admin"))])
async def flag_put(request: Request, name: str, body: FlagSwitch) -> dict[str, Any]:
    who, ip = actor(request), client_ip(request)
    return await _run(
        request, lambda rt, now: service.set_flag(rt.store, name, body.enabled, who, now, ip)
    )
