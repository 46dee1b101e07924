"""The status report `nachtwacht status` prints and `/api/v1/status` returns: one function."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from nachtwacht.clock import iso
from nachtwacht.probes import service
from nachtwacht.store import tables as t

# a state's weight in the overall verdict and the exit code of `nachtwacht status`
SEVERITY = {"ok": 0, "new": 0, "pending": 1, "warning": 1, "unknown": 1, "critical": 2}
OVERALL = {0: "ok", 1: "degraded", 2: "critical"}


def status_report(conn: Connection, now: float, site: str = "") -> dict[str, Any]:
    probes = service.probe_overview(conn)
    components: dict[str, dict[str, Any]] = {}
    for p in probes:
        comp = components.setdefault(
            p["component"], {"name": p["component"], "state": "ok", "probes": []}
        )
        state = p["state"] or "new"
        comp["probes"].append(
            {
                "name": p["name"],
                "kind": p["kind"],
                "state": state,
                "since": iso(p["since"]),
                "last_check": iso(p["last_check"]),
                "age_seconds": None if p["last_check"] is None else round(now - p["last_check"], 1),
                "value": p["last_value"],
                "latency_ms": p["last_latency_ms"],
                "message": p["last_message"],
                "depends_on": p["depends_on"],
            }
        )
        if SEVERITY.get(state, 1) > SEVERITY.get(comp["state"], 0):
            comp["state"] = "critical" if SEVERITY[state] == 2 else "degraded"
    modules = [
        {
            "module": row.module,
            "instance": row.instance,
            "healthy": not row.consecutive_errors,
            "last_ok": iso(row.last_ok),
            "last_error": row.last_error,
            "consecutive_errors": row.consecutive_errors,
        }
        for row in conn.execute(select(t.module_health).order_by(t.module_health.c.module))
    ]
    open_incidents = [
        {
            "id": row.id,
            "severity": row.severity,
            "status": row.status,
            "title": row.title,
            "detected_at": iso(row.detected_at),
            "acknowledged": row.acknowledged_at is not None,
            "response_due_at": iso(row.response_due_at),
        }
        for row in conn.execute(
            select(t.incidents)
            .where(t.incidents.c.status.in_(("investigating", "mitigating", "monitoring")))
            .order_by(t.incidents.c.severity, t.incidents.c.id)
        )
    ]
    level = max((SEVERITY.get(p["state"] or "new", 1) for p in probes), default=0)
    if any(not m["healthy"] for m in modules):
        level = max(level, 1)
    return {
        "site": site,
        "generated_at": iso(now),
        "overall": OVERALL[level],
        "level": level,
        "components": list(components.values()),
        "incidents": open_incidents,
        "engine": modules,
    }
