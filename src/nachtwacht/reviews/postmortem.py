"""The post-incident review document: everything recorded about one incident, and its figures.

The figures (seconds):

- time to detect = detected − started (started is the first failing result for an alert);
- time to acknowledge = acknowledged − detected;
- time to mitigate = mitigated − detected (mitigated: the first move to mitigating or monitoring);
- time to resolve = resolved − detected; duration = resolved − started;
- the response SLA is met when the incident was acknowledged, or was resolved, by
  `response_due_at`; it is missed when acknowledged or resolved later, or when the escalation
  recorded a breach (`breached_at`).

Downtime per component comes from the probes' state changes over [started, resolved) (see
downtime.py). Notifications are the incident's outbox rows; review and follow-up reminders are
listed apart. `build` gathers the data; document.py renders it as Markdown or HTML.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from sqlalchemy import Connection, select

from nachtwacht.clock import iso
from nachtwacht.config.schema import Settings
from nachtwacht.incidents import service as incidents
from nachtwacht.incidents.models import describe_target
from nachtwacht.incidents.sla import response_met
from nachtwacht.notify.compose import SEVERITY_NAMES
from nachtwacht.reviews import followups, service
from nachtwacht.reviews.downtime import downtime
from nachtwacht.store import tables as t

REMINDER_KINDS = ("review_reminder", "followup_reminder")
# who acts on the timeline without being a person
SYSTEM_ACTORS = {"nachtwacht", "probe", "alertmanager", "system"}


def delta(later: float | None, earlier: float | None) -> float | None:
    return None if later is None or earlier is None else round(later - earlier, 3)


def sla_met(inc: dict[str, Any], now: float) -> bool | None:
    """True/False once decided; None while unacknowledged and not yet due (incidents/sla.py)."""
    return response_met(inc, now)


def figures(inc: dict[str, Any], now: float) -> dict[str, Any]:
    return {
        "time_to_detect": delta(inc["detected_at"], inc["started_at"]),
        "time_to_acknowledge": delta(inc["acknowledged_at"], inc["detected_at"]),
        "time_to_mitigate": delta(inc["mitigated_at"], inc["detected_at"]),
        "time_to_resolve": delta(inc["resolved_at"], inc["detected_at"]),
        "duration": delta(inc["resolved_at"], inc["started_at"]),
        "sla_met": sla_met(inc, now),
    }


def _rows(conn: Connection, query: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(query).mappings()]


def _runbooks(conn: Connection, incident_id: int) -> list[dict[str, Any]]:
    r, s = t.runbook_runs.c, t.runbook_steps.c
    runs = _rows(
        conn, select(t.runbook_runs).where(r.incident_id == incident_id).order_by(r.started_at)
    )
    for run in runs:
        run["steps"] = _rows(
            conn, select(t.runbook_steps).where(s.run_id == run["id"]).order_by(s.idx, s.id)
        )
    return runs


def _notifications(conn: Connection, incident_id: int) -> dict[str, Any]:
    o = t.outbox.c
    rows = _rows(
        conn,
        select(o.id, o.kind, o.channel, o.contact, o.status, o.attempts, o.created_at, o.sent_at)
        .where(o.incident_id == incident_id)
        .order_by(o.created_at, o.id),
    )
    messages = [m for m in rows if m["kind"] not in REMINDER_KINDS]
    return {
        "total": len(messages),
        "sent": sum(m["status"] == "sent" for m in messages),
        "failed": sum(m["status"] == "dead" for m in messages),
        # queued, then made untrue by an ack or the resolution: never sent, not a failure
        "withdrawn": sum(m["status"] == "cancelled" for m in messages),
        "by_kind": dict(Counter(m["kind"] for m in messages)),
        "rows": messages,
        "reminders": [m for m in rows if m["kind"] in REMINDER_KINDS],
    }


def _people(settings: Settings, contact: str | None) -> str | None:
    found = settings.people.contact(contact) if contact else None
    return found.name if found else contact


def build(conn: Connection, settings: Settings, incident_id: int, now: float) -> dict[str, Any]:
    inc = incidents.require(conn, incident_id)
    events = incidents.timeline(conn, incident_id)
    start = inc["started_at"]
    end = inc["resolved_at"] if inc["resolved_at"] is not None else now
    components = [inc["component"]] if inc["component"] else []
    roles = [
        {**r, "name": _people(settings, r["contact"])} for r in incidents.roles(conn, incident_id)
    ]
    actors = sorted({e["actor"] for e in events} - SYSTEM_ACTORS)
    checklist_runs = _rows(
        conn,
        select(t.checklist_runs)
        .where(t.checklist_runs.c.incident_id == incident_id)
        .order_by(t.checklist_runs.c.ran_at, t.checklist_runs.c.id),
    )
    for run in checklist_runs:
        run["items"] = json.loads(run.pop("items_json"))
        run["passed"] = bool(run["passed"])
    fields = service.get_fields(conn, incident_id)
    base = inc["resolved_at"]
    review = settings.reviews
    return {
        "site": settings.site,
        "timezone": settings.timezone,
        "generated_at": now,
        "incident": {
            "id": inc["id"],
            "title": inc["title"],
            "severity": inc["severity"],
            "severity_name": SEVERITY_NAMES.get(inc["severity"], ""),
            "status": inc["status"],
            "component": inc["component"],
            "origin": inc["origin"],
            "commander": inc["commander"],
            "commander_name": _people(settings, inc["commander"]),
            "impact": inc["impact"],
            "policy": inc["policy"],
        },
        "times": {
            k: inc[k]
            for k in (
                "started_at",
                "detected_at",
                "acknowledged_at",
                "mitigated_at",
                "resolved_at",
                "closed_at",
                "response_due_at",
                "breached_at",
            )
        },
        "acknowledged_by": inc["acknowledged_by"],
        "figures": figures(inc, now),
        "sla": {
            "target": describe_target(inc["severity"]),
            "due_at": inc["response_due_at"],
            "met": sla_met(inc, now),
            "breached_at": inc["breached_at"],
        },
        "window": {"start_at": start, "end_at": end},
        "downtime": downtime(conn, start, end, components),
        "timeline": [
            {"at": e["ts"], "kind": e["kind"], "actor": e["actor"], "message": e["message"]}
            for e in events
        ],
        "notifications": _notifications(conn, incident_id),
        "responders": {"acknowledged_by": inc["acknowledged_by"], "roles": roles, "actors": actors},
        "runbooks": _runbooks(conn, incident_id),
        "evidence": _rows(
            conn,
            select(t.evidence_bundles)
            .where(t.evidence_bundles.c.incident_id == incident_id)
            .order_by(t.evidence_bundles.c.created_at),
        ),
        "checklist": {
            "runs": checklist_runs,
            "skipped": [
                {"at": e["ts"], "actor": e["actor"], "reason": (e["data"] or {}).get("reason")}
                for e in events
                if e["kind"] == "checklist_skipped"
            ],
        },
        "fields": fields,
        "followups": followups.list_followups(conn, now, "all", incident_id),
        "deadlines": {
            "analysis": {
                "due_at": base + review.analysis_within if base is not None else None,
                "done": service.done(fields, service.ANALYSIS_FIELDS),
            },
            "review": {
                "due_at": base + review.review_within if base is not None else None,
                "done": service.done(fields, service.REVIEW_FIELDS),
            },
        },
    }


def as_json(value: Any, key: str = "") -> Any:
    """The review with every epoch time (`*_at`, `at`) as an ISO 8601 string."""
    if isinstance(value, dict):
        return {k: as_json(v, k) for k, v in value.items()}
    if isinstance(value, list):
        if key == "intervals":
            return [{"from": iso(a), "to": iso(b)} for a, b in value]
        return [as_json(v) for v in value]
    if (key == "at" or key.endswith("_at")) and isinstance(value, int | float):
        return iso(value)
    return value
