"""The Analytics page (mounted in web/app.py behind `access`); helpers come from web.render.

GET  /analytics?days=7            error trend and hours charts (uPlot), top/new/recurring
                                  issues, spikes, forecasts, the latest baseline comparison,
                                  open analytics alerts and the flags
POST /analytics/flags             admin: switch a flag (form: name, enabled=on|off)
POST /analytics/baselines         responder: capture a baseline now (form: name)
POST /analytics/cache/clear       responder: clear the analytics results cache
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Connection

from nachtwacht.analytics import flags, service
from nachtwacht.analytics.alerts import open_alerts
from nachtwacht.analytics.baselines import BaselineError
from nachtwacht.analytics.patterns import MAX_DAYS
from nachtwacht.auth.deps import access, actor, client_ip, principal_of
from nachtwacht.web.render import _form, _redirect, _show
from nachtwacht.web.state import runtime_of

router = APIRouter(include_in_schema=False, dependencies=[Depends(access)])
DAY_CHOICES = (1, 7, 14, 30, 90)


def page_data(days: int) -> Any:
    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        store, settings = rt.store, rt.settings
        errors = service.error_patterns(store, settings, now, days)
        disabled = bool(errors.get("disabled"))
        forecast = None if disabled else service.forecasts(store, settings, now)
        try:
            comparison = service.compare_baseline_cached(store, settings, now)
        except BaselineError as exc:
            comparison = {"missing": str(exc)}
        chart = None
        if not disabled:
            chart = {
                "daily": {
                    "x": [d["start"] for d in errors["daily"]],
                    "y": [d["count"] for d in errors["daily"]],
                    "slope": errors["trend"]["slope"],
                    "mean": errors["trend"]["mean"],
                    # the line is drawn over the days with data only
                    "first": errors["trend"]["first_day"],
                },
                "hours": errors["hourly"]["by_hour"],
                "series": {
                    "first": errors["series"]["first_hour"] * 3600,
                    "y": errors["series"]["counts"],
                    "median": errors["spike_baseline"]["median"],
                },
            }
        return {
            "title": "Analytics",
            "days": days,
            "day_choices": DAY_CHOICES,
            "errors": errors,
            "disabled": disabled,
            "disabled_message": service.DISABLED_MESSAGE,
            "forecast": forecast,
            "comparison": comparison,
            "flags": flags.list_flags(conn),
            "alerts": open_alerts(conn),
            "chart": chart,
        }

    return build


async def _page(request: Request, days: int, status: int = 200, **extra: Any) -> HTMLResponse:
    principal = principal_of(request)
    is_admin = bool(principal and principal.allows("admin"))
    build = page_data(days)

    def with_role(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        return build(conn, rt, now) | {"is_admin": is_admin}

    return await _show(request, "analytics.html", with_role, status=status, **extra)


@router.get("/analytics", response_class=HTMLResponse)
async def analytics_page(request: Request, days: int = Query(7, ge=1, le=MAX_DAYS)) -> HTMLResponse:
    return await _page(request, days)


async def _refuse(request: Request, message: str, status: int) -> HTMLResponse:
    return await _page(request, 7, status=status, error=message)


async def _do(request: Request, work: Any) -> None:
    rt = runtime_of(request)
    await asyncio.to_thread(lambda: work(rt, rt.clock.now()))


@router.post("/analytics/flags")
async def analytics_flag(request: Request) -> Response:
    principal = principal_of(request)
    if principal is None or not principal.allows("admin"):
        return await _refuse(request, "Only an admin can switch flags.", 403)
    form = await _form(request)
    name = form.get("name", "")
    try:
        flags.check_name(name)
        enabled = flags.parse_switch(form.get("enabled", ""))
    except flags.FlagError as exc:
        return await _refuse(request, str(exc), exc.http_status)
    who, ip = actor(request), client_ip(request)
    await _do(request, lambda rt, now: service.set_flag(rt.store, name, enabled, who, now, ip))
    return _redirect("/analytics#flags")


@router.post("/analytics/baselines")
async def analytics_capture(request: Request) -> Response:
    form = await _form(request)
    who = actor(request)

    def work(rt: Any, now: float) -> None:
        window = rt.settings.analytics.baseline.window
        service.capture_baseline(rt.store, rt.settings, now, who, form.get("name"), window)

    try:
        await _do(request, work)
    except BaselineError as exc:
        return await _refuse(request, str(exc), exc.http_status)
    return _redirect("/analytics#baseline")


@router.post("/analytics/cache/clear")
async def analytics_cache_clear(request: Request) -> Response:
    await _do(request, lambda rt, now: service.clear_cache(rt.store, None))
    return _redirect("/analytics")
