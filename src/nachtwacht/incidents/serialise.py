"""Incident data as the API and CLI show it: times as ISO strings, roles, alerts, timeline."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from nachtwacht.clock import iso
from nachtwacht.config.schema import Settings
from nachtwacht.incidents import service
from nachtwacht.incidents.models import describe_target, response_overdue

TIMES = (
    "started_at",
    "detected_at",
    "acknowledged_at",
    "mitigated_at",
    "resolved_at",
    "closed_at",
    "response_due_at",
    "breached_at",
    "next_step_at",
    "next_page_at",
    "update_due_at",
    "created_at",
    "updated_at",
)


def summary(inc: dict[str, Any], now: float) -> dict[str, Any]:
    out = {k: v for k, v in inc.items() if k not in ("ack_token",)}
    for key in TIMES:
        out[key] = iso(inc.get(key))
    out["response_target"] = describe_target(inc["severity"])
    out["response_overdue"] = response_overdue(
        inc["acknowledged_at"], inc["response_due_at"], now, inc["resolved_at"]
    )
    out["open_for_seconds"] = round((inc["resolved_at"] or now) - inc["detected_at"], 1)
    return out


def detail(conn: Connection, settings: Settings, incident_id: int, now: float) -> dict[str, Any]:
    inc = service.require(conn, incident_id)
    out = summary(inc, now)
    out["ack_url"] = f"{settings.incidents.public_url.rstrip('/')}/ack/{inc['ack_token']}"
    out["roles"] = [{**r, "added_at": iso(r["added_at"])} for r in service.roles(conn, incident_id)]
    out["alerts"] = [
        {
            k: (iso(v) if k in ("started_at", "fired_at", "resolved_at", "last_seen") else v)
            for k, v in a.items()
            if k != "labels_json"
        }
        for a in service.alerts_of(conn, incident_id)
    ]
    out["timeline"] = [{**e, "time": iso(e["ts"])} for e in service.timeline(conn, incident_id)]
    out["external_support"] = [e.model_dump() for e in settings.people.external]
    return out
