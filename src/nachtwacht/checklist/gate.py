"""The rule that S1 and S2 incidents are resolved only after the restoration checklist.

A person resolving an S1 or S2 incident needs either

- a passing checklist run *for that incident* that is its latest run since the incident was
  acknowledged (since detection when nobody acknowledged it; since the last reopening when it
  was reopened): a run from before the response began proves nothing about the restoration,
  and a later failing run overrides an earlier pass; or
- a written reason to skip it, recorded on the timeline (`checklist_skipped`).

Nachtwacht's own automatic resolution (every alert recovered) does not pass through here: the
review shows that no checklist ran. Kept apart from the checklist runner so that the incident
package can import it without pulling in HTTP clients and probes.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, func, select

from nachtwacht.incidents.models import needs_checklist
from nachtwacht.incidents.service import IncidentError, add_event
from nachtwacht.store import tables as t

MIN_REASON = 3


def checklist_since(conn: Connection, inc: dict[str, Any]) -> float:
    """From when a checklist run counts for this incident."""
    since = inc["acknowledged_at"] if inc["acknowledged_at"] is not None else inc["detected_at"]
    reopened = conn.execute(
        select(func.max(t.incident_events.c.ts)).where(
            t.incident_events.c.incident_id == inc["id"],
            t.incident_events.c.kind == "reopened",
        )
    ).scalar()
    return max(since, reopened) if reopened is not None else since


def latest_run(conn: Connection, incident_id: int, since: float) -> dict[str, Any] | None:
    c = t.checklist_runs.c
    row = (
        conn.execute(
            select(t.checklist_runs)
            .where(c.incident_id == incident_id, c.ran_at >= since)
            .order_by(c.ran_at.desc(), c.id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def failed_items(run: dict[str, Any]) -> list[str]:
    return [i["item"] for i in json.loads(run["items_json"]) if not i.get("ok")]


def resolution_gate(
    conn: Connection, inc: dict[str, Any], skip_reason: str | None, actor: str, now: float
) -> None:
    """Allow the resolution (recording why) or raise a 409 saying what is missing."""
    if not needs_checklist(inc["severity"]):
        return
    reason = (skip_reason or "").strip()
    if reason:
        if len(reason) < MIN_REASON:
            raise IncidentError(
                f"the reason to skip the checklist needs at least {MIN_REASON} characters",
                "skip_checklist",
                kind="invalid",
            )
        add_event(
            conn,
            inc["id"],
            now,
            "checklist_skipped",
            actor,
            f"restoration checklist skipped: {reason}",
            {"reason": reason},
        )
        return
    run = latest_run(conn, inc["id"], checklist_since(conn, inc))
    if run is not None and run["passed"]:
        add_event(
            conn,
            inc["id"],
            now,
            "checklist",
            actor,
            f"resolution backed by restoration checklist run #{run['id']} (passed)",
            {"run_id": run["id"]},
        )
        return
    if run is None:
        since = "it was acknowledged" if inc.get("acknowledged_at") else "it was detected"
        why = f"no restoration checklist has passed for it since {since}"
    else:
        why = (
            f"its latest restoration checklist run #{run['id']} failed "
            f"({', '.join(failed_items(run))})"
        )
    raise IncidentError(
        f"S{inc['severity']} incident {inc['id']} cannot be resolved yet: {why}. Run the "
        f"checklist (`nachtwacht verify --incident {inc['id']}`, or the review panel), or give "
        "a written reason to skip it (`--skip-checklist REASON`, or the field skip_checklist)",
        "skip_checklist",
    )
