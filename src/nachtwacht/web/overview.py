"""The overview (`/`) and its live fragments: the probe grid, host metrics, open incidents,
uptime and the day's errors.

It combines several domains on one page, so it lives with the app rather than in one
domain's `pages.py`; each part's data comes from its domain's services.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup, escape
from sqlalchemy import Connection

from nachtwacht.alerts.maintenance import active_windows
from nachtwacht.auth.deps import access
from nachtwacht.backup import restoretest
from nachtwacht.drills import schedule
from nachtwacht.drills import service as drills
from nachtwacht.errors import issues
from nachtwacht.incidents import dashboard
from nachtwacht.notify import reach
from nachtwacht.probes import service as probes
from nachtwacht.probes.report import SEVERITY, member_rows
from nachtwacht.probes.uptime import WINDOWS, UptimeCache, uptime
from nachtwacht.web.render import STATES, Fmt, _cache, _show, pct, uptime_class

router = APIRouter(include_in_schema=False, dependencies=[Depends(access)])

# worst first, for a component's summary badge and the counts line
ORDER = ("critical", "warning", "degraded", "unknown", "pending", "maintenance", "new", "ok")


def cell_html(cell: dict[str, Any], fmt: Fmt) -> str:
    """One probe's cell in the status grid.

    Written out here rather than in _grid.html: this runs once per probe on every poll, and
    Jinja's attribute lookups and escapes made it most of the overview's time at 4,000 probes.
    """
    state, name = cell["state"], escape(cell["name"])
    label, icon = STATES[state]
    title = f"{cell['check_state']} since {fmt.short(cell['since'])}"
    if cell["maintenance"]:
        title += f", maintenance: {cell['maintenance']}"
    message = cell["message"]
    if message:
        title += f" · {message}"
    extra = f' <span class="pmsg">{escape(message)}</span>' if message and state != "ok" else ""
    href = "/probes/" + quote(cell["name"], safe="")
    return (
        f'<li><a id="p-{name}" class="cell state-{state}" href="{href}"'
        f' data-probe="{name}" data-state="{state}" title="{escape(title)}">'
        f'<span class="badge state-{state}"><span class="icon" aria-hidden="true">{icon}</span>'
        f' {label}</span> <span class="pname">{name}</span>{extra}</a></li>'
    )


def grid_data(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
    """Components with their probes and display states; host metrics; the counts line."""
    settings = rt.settings
    fmt = Fmt(now, settings.zone)
    live = active_windows(conn, settings, now)
    components: dict[str, dict[str, Any]] = {}
    counts = dict.fromkeys(ORDER, 0)
    hosts = []
    level = 0
    pending = False
    rows = probes.probe_overview(conn)
    for p in rows:
        state = p["state"] or "new"
        window = None
        if live:
            window = next((w for w in live if w.covers(p["name"], p["component"])), None)
        shown = "maintenance" if window is not None else state
        counts[shown] += 1
        if window is None:
            # a probe in maintenance does not make the site look down: its window says why
            if state == "pending":
                pending = True  # retries not used up: not yet a warning, its own badge
            else:
                level = max(level, SEVERITY.get(state, 1))
        cell = {
            "name": p["name"],
            "state": shown,
            "check_state": state,
            "since": p["since"],
            "message": p["last_message"] or "",
            "maintenance": window.name if window is not None else None,
        }
        comp = components.get(p["component"])
        if comp is None:
            comp = components[p["component"]] = {"name": p["component"], "state": "ok", "cells": []}
        comp["cells"].append((ORDER.index(shown), len(comp["cells"]), cell_html(cell, fmt)))
        if ORDER.index(shown) < ORDER.index(comp["state"]):
            comp["state"] = shown
        if p["kind"] == "host":
            cfg = next((c for c in settings.probes if c.name == p["name"]), None)
            hosts.append(
                {
                    **cell,
                    "metric": getattr(cfg, "metric", "host"),
                    "mount": getattr(cfg, "mount", None),
                    "value": p["last_value"],
                    "warn": getattr(cfg, "warn", None),
                    "critical": getattr(cfg, "critical", None),
                }
            )
    for comp in components.values():
        comp["size"] = len(comp["cells"])
        # failing probes first within a component, then by name
        comp["html"] = Markup("".join(html for *_, html in sorted(comp.pop("cells"))))
    # what needs a human first: the worst component on top, then the configured order
    listed = {name: i for i, name in enumerate(settings.component_names())}
    shown_order = sorted(
        components.values(),
        key=lambda c: (ORDER.index(c["state"]), listed.get(c["name"], len(listed)), c["name"]),
    )
    return {
        "probe_rows": rows,
        "components": shown_order,
        "counts": [(s, counts[s]) for s in ORDER if counts[s]],
        "overall": "pending" if pending and level == 0 else ("ok", "warning", "critical")[level],
        "hosts": hosts,
        "windows_active": [w.name for w in live],
    }


def incidents_data(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
    # a drill's incident is on the Drills page and the incident list, not in the site's state
    rows = [r for r in dashboard.open_incidents(conn, now) if r.get("drill_id") is None]
    return {"open_incidents": rows}


def uptime_data(
    conn: Connection, now: float, rows: list[dict[str, Any]], cache: UptimeCache
) -> dict[str, Any]:
    found = uptime(conn, now, [p["id"] for p in rows], cache=cache)
    html = []
    for p in rows:
        # like the grid cells, written out here: one row per probe
        name = escape(p["name"])
        values = "".join(
            f'<td class="num up-{uptime_class(v)}" data-label="{escape(w)}">{pct(v)}</td>'
            for w, v in found[p["id"]].items()
        )
        # data-label: on a phone each row is a card whose cells carry their window's name
        html.append(
            f'<tr data-uptime="{name}"><td data-label="Probe">'
            f'<a href="/probes/{quote(p["name"], safe="")}">{name}</a></td>'
            f'<td class="wide-only" data-label="Component">{escape(p["component"])}</td>'
            f"{values}</tr>"
        )
    return {
        "uptime_rows": Markup("\n".join(html)),
        "uptime_count": len(rows),
        "windows": list(WINDOWS),
    }


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request) -> HTMLResponse:
    cache = _cache(request)

    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        grid = grid_data(conn, rt, now)
        return (
            grid
            | incidents_data(conn, rt, now)
            | uptime_data(conn, now, grid["probe_rows"], cache)
            | errors_data(conn, now)
            | {"paging_problems": reach.paging_problems(rt.settings)}
            | {"restore_test": restoretest.status(conn, rt.settings, now)}
            | drills_data(conn, rt.settings, now)
            # the serve processes on this store (docs/decisions/0024): read from the store,
            # so every member shows the same
            | {"members": member_rows(conn, now)}
        )

    return await _show(request, "overview.html", build)


def drills_data(conn: Connection, settings: Any, now: float) -> dict[str, Any]:
    """Overdue drill schedules and the drills in progress: one small line above the grid."""
    return {
        "drills_overdue": [s for s in schedule.status(conn, settings, now) if s["overdue"]],
        "drills_running": drills.running(conn),
    }


def errors_data(conn: Connection, now: float) -> dict[str, Any]:
    """Application errors in the last 24 hours (whole hours), from the hourly issue counts."""
    return {"errors_24h": issues.last_day(conn, now)}


@router.get("/ui/overview/grid", response_class=HTMLResponse)
async def overview_grid(request: Request) -> HTMLResponse:
    return await _show(request, "_grid.html", grid_data, fragment=True)


@router.get("/ui/overview/incidents", response_class=HTMLResponse)
async def overview_incidents(request: Request) -> HTMLResponse:
    return await _show(request, "_incidents.html", incidents_data, fragment=True)
