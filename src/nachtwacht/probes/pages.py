"""A probe's page: its state, maintenance, configuration (masked), history and uptime."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import Connection, select

from nachtwacht.alerts.maintenance import active_windows
from nachtwacht.auth.deps import access
from nachtwacht.config import redact
from nachtwacht.incidents.models import OPEN_STATUSES
from nachtwacht.probes import locations
from nachtwacht.probes import service as probes
from nachtwacht.probes.uptime import WINDOWS, uptime
from nachtwacht.store import tables as t
from nachtwacht.web.render import PageError, _cache, _show, as_yaml

router = APIRouter(include_in_schema=False, dependencies=[Depends(access)])

STATUS_NAMES = {0: "ok", 1: "warning", 2: "critical", 3: "unknown"}


def open_incident(conn: Connection, probe_id: int) -> dict[str, Any] | None:
    """The newest open incident one of this probe's alerts belongs to."""
    a, i = t.alerts, t.incidents
    row = (
        conn.execute(
            select(i.c.id, i.c.title, i.c.severity, i.c.status)
            .join(a, a.c.incident_id == i.c.id)
            .where(a.c.probe_id == probe_id, i.c.status.in_(OPEN_STATUSES))
            .order_by(i.c.id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


@router.get("/probes/{name}", response_class=HTMLResponse)
async def probe_page(request: Request, name: str) -> HTMLResponse:
    cache = _cache(request)

    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        probe = probes.probe_by_name(conn, name)
        if probe is None:
            raise PageError(f"There is no probe named “{name}”.")
        config = probes.probe_config(conn, name)
        history = probes.state_history(conn, probe["id"], 50)
        results = probes.recent_results(conn, probe["id"], limit=20)
        live = active_windows(conn, rt.settings, now)
        window = next((w for w in live if w.covers(name, probe["component"])), None)
        return {
            "probe": {**probe, "state": probe["state"] or "new"},
            "maintenance": window.name if window is not None else None,
            "config_yaml": as_yaml(redact.probe_shown(config) if config is not None else {}),
            "history": history,
            "results": [{**r, "status_name": STATUS_NAMES.get(r["status"], "?")} for r in results],
            "uptime": uptime(conn, now, [probe["id"]], cache=cache)[probe["id"]],
            "windows": list(WINDOWS),
            "incident": open_incident(conn, probe["id"]),
            "located": locations.location_view(conn, probe["id"], config or {}),
        }

    return await _show(request, "probe.html", build)
