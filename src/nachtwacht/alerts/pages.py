"""The settings page: the configuration (masked) and the maintenance windows, which are
changed here (add one, end one) through the same service as /api/v1/maintenance.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Connection

from nachtwacht.alerts import windows
from nachtwacht.auth.deps import access, actor
from nachtwacht.config import redact
from nachtwacht.web.render import ActionError, RowId, _act, _form, _redirect, _show, as_yaml

router = APIRouter(include_in_schema=False, dependencies=[Depends(access)])


def settings_data(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
    settings = rt.settings
    return {
        "config_yaml": as_yaml(redact.settings_shown(settings)),
        "maintenance": windows.list_windows(conn, settings, now),
        "components": settings.component_names(),
    }


@router.get("/settings", response_class=HTMLResponse)
async def settings_page(request: Request) -> HTMLResponse:
    return await _show(request, "settings.html", settings_data, form={})


def _names(text: str) -> list[str]:
    return [n.strip() for n in re.split(r"[,\s]+", text) if n.strip()]


async def _settings_action(
    request: Request, work: Callable[[Connection, Any, float, dict], Any]
) -> Response:
    form = await _form(request)
    try:
        await _act(request, lambda conn, rt, now: work(conn, rt, now, form))
    except ActionError as exc:
        return await _show(
            request,
            "settings.html",
            settings_data,
            status=exc.status_code,
            error=str(exc),
            form=form,
        )
    return _redirect("/settings#maintenance")


@router.post("/settings/maintenance")
async def maintenance_add(request: Request) -> Response:
    who = actor(request)

    def work(conn: Connection, rt: Any, now: float, form: dict[str, str]) -> None:
        start, end = windows.span(
            now,
            rt.settings.zone,
            start=form.get("starts_at") or None,
            end=form.get("ends_at") or None,
            duration=form.get("duration") or None,
        )
        windows.add_window(
            conn,
            rt.settings,
            name=form.get("name", ""),
            starts_at=start,
            ends_at=end,
            now=now,
            created_by=who,
            components=_names(form.get("components", "")),
            probes=_names(form.get("probes", "")),
            comment=form.get("comment", ""),
        )

    return await _settings_action(request, work)


@router.post("/settings/maintenance/{window_id}/end")
async def maintenance_end(request: Request, window_id: RowId) -> Response:
    return await _settings_action(
        request, lambda conn, rt, now, form: windows.end_window(conn, window_id, now)
    )
