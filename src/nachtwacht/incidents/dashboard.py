"""What the dashboard shows of incidents: the response clock, the escalation plan, message
previews, what the paging missed, and the incident page's whole view.

Plain data for the templates (incidents/pages.py, the overview, the runbooks panel's
refusals); no HTTP here.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection

from nachtwacht.incidents import service as incidents
from nachtwacht.incidents.models import OPEN_STATUSES, describe_target, needs_checklist
from nachtwacht.incidents.notifications import EDITABLE_KINDS, context_for, notified_so_far
from nachtwacht.incidents.sla import response_met
from nachtwacht.notify import reach
from nachtwacht.notify.compose import SEVERITY_NAMES, base_context
from nachtwacht.notify.outbox import count_for_incident
from nachtwacht.notify.templates import TemplateError, render
from nachtwacht.oncall import verify

PREVIEW_KINDS = ("emergency_alert", "status_update", "customer_notice", "resolved")
UPDATE_STATUSES = ("investigating", "mitigating", "monitoring", "resolved")


def sla(inc: dict[str, Any], now: float) -> dict[str, Any]:
    """The response clock of an incident: acknowledged, due, or overdue."""
    due = inc["response_due_at"]
    if inc["acknowledged_at"] is not None:
        late = inc["acknowledged_at"] > due
        return {"state": "late" if late else "met", "due": due, "left": None}
    if inc["status"] not in OPEN_STATUSES:
        # over before anyone acknowledged: in time if it was over by the deadline (sla.py)
        met = response_met(inc, now)
        return {"state": "met" if met else "missed", "due": due, "left": None}
    left = due - now
    return {"state": "overdue" if left < 0 else "due", "due": due, "left": left}


def needs_human_first(rows: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """Incidents with their response clocks, in the order a person woken at night takes them.

    Open ones first, and among them: the worst severity, then overdue, then not yet
    acknowledged, then the newest. Resolved and closed ones follow, newest first: nothing
    waits on them.
    """

    def key(inc: dict[str, Any]) -> tuple[int, int, int, int, int]:
        if inc["status"] not in OPEN_STATUSES:
            return (1, 0, 0, 0, -inc["id"])
        overdue = inc["sla"]["state"] == "overdue"
        acked = inc["acknowledged_at"] is not None
        return (0, inc["severity"], 0 if overdue else 1, 1 if acked else 0, -inc["id"])

    return sorted(({**r, "sla": sla(r, now)} for r in rows), key=key)


def open_incidents(conn: Connection, now: float) -> list[dict[str, Any]]:
    """The open incidents, what needs a human first (`needs_human_first`), with their clocks."""
    return needs_human_first(incidents.list_incidents(conn, OPEN_STATUSES, 100), now)


def escalation_plan(settings: Any, inc: dict[str, Any]) -> dict[str, Any]:
    """The policy's steps with what has fired, the current step and the next one with its time."""
    policy = (
        settings.incidents.policies.get(inc["policy"])
        or (settings.incidents.policy_for(inc["severity"])[1])
    )
    done = inc["next_step"]
    is_open = inc["status"] in OPEN_STATUSES
    steps = []
    for i, step in enumerate(policy.steps):
        state = "done" if i < done else ("next" if i == done and is_open else "later")
        steps.append(
            {
                "number": i + 1,
                "description": step.description or f"escalation step {i + 1}",
                "after": step.after,
                "at": inc["detected_at"] + step.after,
                "notify": step.notify,
                "repeat": step.repeat,
                "action": step.action,
                "state": state,
            }
        )
    current = steps[done - 1] if done > 0 else None
    upcoming = steps[done] if done < len(steps) and is_open else None
    return {
        "steps": steps,
        "current": current,
        "next": upcoming,
        "next_at": inc["next_step_at"] if upcoming else None,
        "policy": inc["policy"],
    }


def with_unverified(
    conn: Connection, settings: Any, plan: dict[str, Any], now: float
) -> dict[str, Any]:
    """Each step's people whose channels are not verified ("Tina Techlead (technical lead):
    SMS unverified"): a page that may not reach them, seen before it is needed."""
    entries = verify.by_contact(verify.state(conn, settings, now))
    for step in plan["steps"]:
        people: dict[str, None] = {}
        for target in step["notify"]:
            for contact in reach.possible_contacts(settings, target) or []:
                people.setdefault(contact.id)
        step["unverified"] = verify.problems([e for c in people for e in entries.get(c, [])])
    return plan


def previews(
    conn: Connection,
    settings: Any,
    inc: dict[str, Any],
    now: float,
    kinds: tuple[str, ...] = PREVIEW_KINDS,
) -> list[dict]:
    """The notification templates rendered as the outbox would render them now."""
    extra = context_for(conn, settings, inc)
    out = []
    for kind in kinds:
        try:
            ctx = base_context(settings, kind, inc, [], now, extra)
            subject, body = render(kind, ctx, settings.notify.templates_dir)
            out.append({"kind": kind, "subject": subject, "body": body, "error": None})
        except TemplateError as exc:
            out.append({"kind": kind, "subject": "", "body": "", "error": str(exc)})
    return out


def incident_paging(
    conn: Connection, inc: dict[str, Any], timeline: list[dict[str, Any]]
) -> dict[str, Any]:
    """What this incident's pages missed, and whether they reached anybody at all."""
    missed = list(dict.fromkeys(e["message"] for e in timeline if e["kind"] == "not_delivered"))
    queued = count_for_incident(conn, inc["id"])
    return {"missed": missed, "reached_nobody": bool(inc["paged"]) and not queued}


SOURCE_PREFIX = "Source: "  # alerts/external.py: an Alertmanager alert's generatorURL


def alert_view(alert: dict[str, Any]) -> dict[str, Any]:
    """An alert with what the page links to: its probe, and the page of the rule that fired
    it (Alertmanager's generatorURL), when that is an http(s) address."""
    probe = alert["fingerprint"].removeprefix("probe:") if alert["source"] == "probe" else None
    source_url = None
    message = alert.get("message") or "" if alert["source"] == "alertmanager" else ""
    for line in message.splitlines():
        if line.startswith(SOURCE_PREFIX):
            url = line.removeprefix(SOURCE_PREFIX).strip()
            parts = urlsplit(url)
            if parts.scheme in ("http", "https") and parts.netloc:
                source_url = url
    return {**alert, "probe": probe, "source_url": source_url}


def incident_view(
    conn: Connection, settings: Any, incident_id: int, now: float
) -> dict[str, Any] | None:
    """Everything the incident page shows, or None when there is no such incident."""
    inc = incidents.get_incident(conn, incident_id)
    if inc is None:
        return None
    people = settings.people
    roles = []
    for r in incidents.roles(conn, incident_id):
        who = people.contact(r["contact"])
        roles.append({**r, "name": who.name if who else r["contact"]})
    commander = people.contact(inc["commander"]) if inc["commander"] else None
    timeline = incidents.timeline(conn, incident_id)
    return {
        "inc": inc,
        "paging_problems": reach.paging_problems(settings),
        "incident_paging": incident_paging(conn, inc, timeline),
        "is_open": inc["status"] in OPEN_STATUSES,
        "needs_checklist": needs_checklist(inc["severity"]),
        "sla": sla(inc, now),
        "target": describe_target(inc["severity"]),
        "severity_name": SEVERITY_NAMES.get(inc["severity"], ""),
        "commander_name": commander.name if commander else inc["commander"],
        "roles": roles,
        "alerts": [alert_view(a) for a in incidents.alerts_of(conn, incident_id)],
        "timeline": timeline,
        "plan": with_unverified(conn, settings, escalation_plan(settings, inc), now),
        "previews": previews(conn, settings, inc, now),
        # the messages a responder can edit and send: prefilled from their templates
        "drafts": previews(conn, settings, inc, now, EDITABLE_KINDS),
        "notified": [c.name for c in notified_so_far(conn, settings, incident_id)],
        "recipient_roles": sorted({r for c in people.contacts for r in c.roles}),
        "contacts": people.contacts,
        "external": people.external,
        "update_statuses": UPDATE_STATUSES,
    }
