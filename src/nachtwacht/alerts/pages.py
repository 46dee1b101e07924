"""The settings page: the configuration (masked) and the maintenance windows, which are
changed here (add one, end one) through the same service as /api/v1/maintenance.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Connection

from nachtwacht.alerts import windows
from nachtwacht.auth.deps import access, actor
from nachtwacht.config import redact
from nachtwacht.config.loader import link_warnings
from nachtwacht.notify import reach
from nachtwacht.web.render import ActionError, RowId, _act, _form, _redirect, _show, as_yaml

router = APIRouter(include_in_schema=False, dependencies=[Depends(access)])


def settings_data(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
    settings = rt.settings
    shown = redact.settings_shown(settings)
    return {
        "problems": config_problems(settings),
        "summary": summary(settings, shown),
        "config_yaml": as_yaml(without_nulls(shown)),
        "maintenance": windows.list_windows(conn, settings, now),
        "components": settings.component_names(),
    }


def config_problems(settings: Any) -> list[dict[str, str]]:
    """What `config validate` warns about: loads, but will not work as meant."""
    found = [*reach.config_warnings(settings), *link_warnings(settings)]
    return [{"key": _dotted(loc), "message": message} for loc, message in found]


def _dotted(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def summary(settings: Any, shown: dict[str, Any]) -> dict[str, Any]:
    """What matters at a glance, from the masked config (`shown`): nothing secret in it."""
    channels = []
    for name, channel in shown["notify"]["channels"].items():
        where = channel.get("url") or (
            f"{channel['host']}:{channel['port']}" if "host" in channel else ""
        )
        channels.append({"name": name, "kind": channel["kind"], "where": where})
    contacts = [
        {
            "name": c.name,
            "roles": list(c.roles),
            "means": [m for m in ("email", "phone", "chat") if getattr(c, m)],
        }
        for c in settings.people.contacts
    ]
    severities: dict[str, list[int]] = {}
    for level, policy in sorted(settings.incidents.severity_policy.items()):
        severities.setdefault(policy, []).append(level)
    policies = [
        {"name": name, "steps": len(policy.steps), "severities": severities.get(name, [])}
        for name, policy in settings.incidents.policies.items()
    ]
    return {
        "channels": channels,
        "contacts": contacts,
        "rotations": [{"name": r.name, "members": r.members} for r in settings.people.rotations],
        "policies": policies,
        "probes": len(settings.probes),
        "probe_kinds": dict(Counter(p.kind for p in settings.probes).most_common()),
        "store": shown["store"]["url"],
        "public_url": settings.incidents.public_url,
    }


def without_nulls(value: Any) -> Any:
    """The config without the keys left unset (`phone: null` says nothing)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


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
