"""A drill's figures, read from its incident's timeline: what the protocol asks of a response.

Each figure is seconds from detection (the injected fault) to:

- page: the first page delivered (a `notification_sent` of an emergency alert/notification);
- acknowledge: the acknowledgement; target the severity's response target (incidents/sla.py:
  S1 15 minutes; S2 1 hour in business hours, 2 outside; S3 4 business hours);
- first status update: the first `update`; target the severity's update cadence
  (`incidents.update_every`, S1 30 minutes);
- mitigation: the move to mitigating or monitoring (resolving counts when it came first);
- resolution: the resolution; and whether a passing restoration checklist backed it.

A figure with no event is missed (the drill ended without it). `went_well` and `missed` are
sentences made from the same figures, for the report.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from nachtwacht.config.schema import Settings
from nachtwacht.incidents import service as incidents
from nachtwacht.notify.outbox import PAGES

LABELS = {
    "page": "Time to page",
    "acknowledge": "Time to acknowledge",
    "status_update": "Time to first status update",
    "mitigation": "Time to mitigation",
    "resolution": "Time to resolution",
    "checklist": "Resolved with the restoration checklist",
}


def words(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = round(seconds)
    if s < 120:
        return f"{s} s"
    if s < 2 * 3600:
        minutes, rest = divmod(s, 60)
        return f"{minutes} min" + (f" {rest} s" if rest else "")
    return f"{round(s / 3600, 1):g} h"


def _first(events: list[dict[str, Any]], test: Any) -> float | None:
    return next((e["ts"] for e in events if test(e)), None)


def _item(name: str, at: float | None, detected: float, target: float) -> dict[str, Any]:
    seconds = None if at is None else round(at - detected, 3)
    return {
        "name": name,
        "label": LABELS[name],
        "seconds": seconds,
        "target": round(target, 3),
        "met": seconds is not None and seconds <= target,
    }


def measure(
    conn: Connection, settings: Settings, inc: dict[str, Any], now: float
) -> dict[str, Any]:
    events = incidents.timeline(conn, inc["id"])
    detected, severity = inc["detected_at"], inc["severity"]
    cfg = settings.drills
    paged = _first(
        events,
        lambda e: e["kind"] == "notification_sent" and (e["data"] or {}).get("kind") in PAGES,
    )
    updated = _first(events, lambda e: e["kind"] == "update")
    mitigated = inc["mitigated_at"] if inc["mitigated_at"] is not None else inc["resolved_at"]
    items = [
        _item("page", paged, detected, cfg.page_within),
        _item("acknowledge", inc["acknowledged_at"], detected, inc["response_due_at"] - detected),
        _item("status_update", updated, detected, settings.incidents.update_every[severity]),
        _item("mitigation", mitigated, detected, cfg.mitigate_within[severity]),
        _item("resolution", inc["resolved_at"], detected, cfg.resolve_within[severity]),
    ]
    backed = any(
        e["kind"] == "checklist" and e["message"].startswith("resolution backed by") for e in events
    )
    items.append(
        {
            "name": "checklist",
            "label": LABELS["checklist"],
            "seconds": None,
            "target": None,
            "met": backed,
        }
    )
    undelivered = [e["message"] for e in events if e["kind"] == "not_delivered"]
    failed = [e["message"] for e in events if e["kind"] == "notification_failed"]
    escalated = [e["message"] for e in events if e["kind"] == "escalated"]
    met = sum(1 for i in items if i["met"])
    return {
        "incident_id": inc["id"],
        "severity": severity,
        "detected_at": detected,
        "acknowledged_by": inc["acknowledged_by"],
        "items": items,
        "counted": len(items),
        "met": met,
        "not_delivered": undelivered,
        "failed_deliveries": failed,
        "escalations": escalated,
        "went_well": went_well(items),
        "missed": missed(items, undelivered, failed),
        "measured_at": now,
    }


def went_well(items: list[dict[str, Any]]) -> list[str]:
    out = []
    for i in items:
        if not i["met"]:
            continue
        if i["name"] == "checklist":
            out.append("The resolution was backed by a passing restoration checklist.")
        else:
            out.append(
                f"{i['label']}: {words(i['seconds'])}, within the target of {words(i['target'])}."
            )
    return out


def missed(items: list[dict[str, Any]], undelivered: list[str], failed: list[str]) -> list[str]:
    out = []
    for i in items:
        if i["met"]:
            continue
        if i["name"] == "checklist":
            out.append("The incident was resolved without a passing restoration checklist.")
        elif i["seconds"] is None:
            out.append(f"{i['label']}: it never happened (target {words(i['target'])}).")
        else:
            late = i["seconds"] - i["target"]
            out.append(
                f"{i['label']}: {words(i['seconds'])}, {words(late)} past the target of "
                f"{words(i['target'])}."
            )
    out += [f"Not delivered: {m}" for m in undelivered]
    out += [f"Delivery failed: {m}" for m in failed]
    return out
