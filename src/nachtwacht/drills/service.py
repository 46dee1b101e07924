"""Running a drill: a scenario's synthetic alerts through the real alert pipeline.

`run` opens a `drills` row and hands each of the scenario's signals to `alerts.service.process`
with the drill's id, in one transaction: the alert and its incident carry `drill_id`, the first
escalation step queues the pages through the outbox at once (marked DRILL where they are
rendered, notify/compose.py), and everything after that is the ordinary incident: escalation,
reminders, acknowledgement, updates, the checklist gate, the resolved notice.

`end` measures the drill from its incident's timeline (drills/measure.py) and stores the
figures; a drill whose incident is resolved, or that outlived `drills.max_duration`, is ended
by the engine (`end_due`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from sqlalchemy import Connection, func, or_, select, update

from nachtwacht.alerts import service as alerts
from nachtwacht.alerts.service import Signal
from nachtwacht.clock import Clock
from nachtwacht.config.schema import Settings
from nachtwacht.drills import measure, scenarios
from nachtwacht.drills.models import Scenario
from nachtwacht.incidents import escalation
from nachtwacht.incidents import service as incidents
from nachtwacht.incidents.models import OPEN_STATUSES, is_severity
from nachtwacht.problems import Problem
from nachtwacht.runbooks.loader import load_all
from nachtwacht.runbooks.record import RunError, Who
from nachtwacht.runbooks.runner import Runner
from nachtwacht.store import paging
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store, StoreError, inserted_id

log = logging.getLogger(__name__)


class DrillError(Problem):
    """A drill request that cannot be done; `field` names the culprit."""


def scenario_or_error(name: str) -> Scenario:
    found = scenarios.get(name)
    if found is None:
        known = ", ".join(scenarios.builtin())
        raise DrillError(f"no scenario '{name}' (scenarios: {known})", "scenario", "not_found")
    return found


def step_plan(settings: Settings, scenario: Scenario, confirmed: bool) -> list[dict[str, Any]]:
    """Each step of the scenario's runbook and how the drill treats it: simulated (never
    executed) or real (the scenario allows it and the person confirmed)."""
    if scenario.runbook is None:
        return []
    books, _problems = load_all(settings)
    book = books.get(scenario.runbook)
    if book is None:
        return []
    plan = []
    for step in book.steps:
        real = confirmed and step.id in scenario.real_steps
        plan.append(
            {
                "id": step.id,
                "title": step.title,
                "kind": getattr(step, "kind", ""),
                "mode": "real" if real else "simulated",
            }
        )
    return plan


def run(
    conn: Connection,
    settings: Settings,
    name: str,
    now: float,
    actor: str,
    *,
    severity: int | None = None,
    kind: str = "adhoc",
    confirmed: bool = False,
) -> dict[str, Any]:
    """Start a drill of scenario `name`; the drill, with its incident's id."""
    scenario = scenario_or_error(name)
    level = scenario.severity if severity is None else severity
    if not is_severity(level):
        raise DrillError("severity must be 1, 2 or 3", "severity")
    if kind != "adhoc" and kind not in settings.drills.schedules:
        known = ", ".join(["adhoc", *settings.drills.schedules])
        raise DrillError(f"no drill schedule '{kind}' (schedules: {known})", "schedule")
    plan = step_plan(settings, scenario, confirmed)
    drill_id = inserted_id(
        conn.execute(
            t.drills.insert().values(
                scenario=scenario.name,
                kind=kind,
                severity=level,
                status="running",
                started_at=now,
                started_by=actor[:120],
                steps_json=json.dumps(plan),
            )
        )
    )
    incident_id = None
    for number, sig in enumerate(scenario.signals):
        outcome = alerts.process(
            conn,
            settings,
            Signal(
                fingerprint=f"drill:{drill_id}:{number}",
                source=sig.source,
                title=f"DRILL {sig.title}",
                component=sig.component,
                severity=level,
                firing=True,
                started_at=now,
                detected_at=now,
                message=sig.message,
                state="critical" if sig.source == "probe" else None,
                labels={**sig.labels, "drill": str(drill_id)},
                drill_id=drill_id,
            ),
            now,
        )
        incident_id = incident_id or outcome.incident_id
    conn.execute(update(t.drills).where(t.drills.c.id == drill_id).values(incident_id=incident_id))
    if incident_id is not None:
        real = [s["id"] for s in plan if s["mode"] == "real"]
        text = f"DRILL #{drill_id} started by {actor}: scenario {scenario.name} ({scenario.title})"
        if scenario.runbook:
            text += f"; runbook {scenario.runbook}: {len(plan) - len(real)} steps simulated"
            text += f", may run for real (confirmed): {', '.join(real)}" if real else ""
        incidents.add_event(
            conn,
            incident_id,
            now,
            "note",
            actor,
            text,
            {"drill_id": drill_id, "scenario": scenario.name, "steps": plan},
        )
    return require(conn, drill_id)


async def attach_runbook(
    store: Store, settings: Settings, clock: Clock, drill: dict[str, Any], actor: str
) -> int | None:
    """Put the scenario's runbook on the drill's incident as a dry run: every step listed as
    planned on the incident's runbook panel, none executed. Called after the drill committed;
    the run's id, or None when there is no runbook (or it cannot be planned or started: said
    on the timeline). Never raises: the drill has started whatever becomes of its runbook."""
    scenario = scenarios.get(drill["scenario"])
    if scenario is None or scenario.runbook is None or drill["incident_id"] is None:
        return None
    try:
        return await Runner(store, settings, clock).start(
            scenario.runbook,
            who=Who(actor, "responder"),
            incident_id=drill["incident_id"],
            dry_run=True,
        )
    except Exception as exc:  # noqa: BLE001 - the drill and its pages are committed: an error
        # answer now would have the caller start the drill again, paging everyone twice
        text = f"DRILL #{drill['id']}: runbook {scenario.runbook} not attached: {exc}"
        if not isinstance(exc, RunError):
            log.warning("%s", text)

        def note() -> None:
            with store.begin() as conn:
                incidents.add_event(conn, drill["incident_id"], clock.now(), "note", actor, text)

        try:
            await asyncio.to_thread(note)
        except StoreError as again:
            log.warning("drill %s: could not note it on the timeline: %s", drill["id"], again)
        return None


def get(conn: Connection, drill_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(t.drills).where(t.drills.c.id == drill_id)).mappings().first()
    return view(dict(row)) if row is not None else None


def require(conn: Connection, drill_id: int) -> dict[str, Any]:
    found = get(conn, drill_id)
    if found is None:
        raise DrillError(f"no drill {drill_id}", "id", "not_found")
    return found


def view(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if not k.endswith("_json")}
    out["steps"] = json.loads(row["steps_json"]) if row.get("steps_json") else []
    out["measures"] = json.loads(row["measures_json"]) if row.get("measures_json") else None
    return out


def list_drills(conn: Connection, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    query = select(t.drills).order_by(t.drills.c.started_at.desc(), t.drills.c.id.desc())
    return [view(dict(r)) for r in conn.execute(paging.window(query, limit, offset)).mappings()]


def running(conn: Connection) -> list[dict[str, Any]]:
    query = select(t.drills).where(t.drills.c.status == "running").order_by(t.drills.c.id)
    return [view(dict(r)) for r in conn.execute(query).mappings()]


def count_drills(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(t.drills)).scalar() or 0)


def end(
    conn: Connection, settings: Settings, drill_id: int, actor: str, now: float
) -> dict[str, Any]:
    """End a drill: resolve its incident if still open, stop its alerts, store its figures.

    Ending an ended drill changes nothing and returns it.
    """
    drill = require(conn, drill_id)
    if drill["status"] == "ended":
        return drill
    claimed = conn.execute(
        update(t.drills)
        .where(t.drills.c.id == drill_id, t.drills.c.status == "running")
        .values(status="ending")
    ).rowcount
    if not claimed:
        return require(conn, drill_id)  # another process is ending it
    inc = incidents.get_incident(conn, drill["incident_id"]) if drill["incident_id"] else None
    # measured first: what the responders did, not the resolution ending the drill does for them
    figures = measure.measure(conn, settings, inc, now) if inc is not None else None
    if inc is not None and inc["status"] in OPEN_STATUSES:
        # no checklist gate: the drill is over, and its figures already say it was not resolved
        escalation.resolve(conn, settings, inc["id"], actor, now, f"DRILL #{drill_id} ended")
    conn.execute(
        update(t.alerts)
        .where(t.alerts.c.drill_id == drill_id, t.alerts.c.status == "firing")
        .values(status="resolved", resolved_at=now, last_seen=now)
    )
    result = None
    if figures is not None:
        result = "passed" if figures["met"] == figures["counted"] else "missed"
    conn.execute(
        update(t.drills)
        .where(t.drills.c.id == drill_id)
        .values(
            status="ended",
            ended_at=now,
            measures_json=json.dumps(figures) if figures is not None else None,
            result=result,
        )
    )
    if inc is not None and figures is not None:
        incidents.add_event(
            conn,
            inc["id"],
            now,
            "note",
            actor,
            f"DRILL #{drill_id} ended: {figures['met']} of {figures['counted']} targets met",
            {"drill_id": drill_id, "result": result},
        )
    return require(conn, drill_id)


def end_due(conn: Connection, settings: Settings, now: float) -> list[int]:
    """End the running drills whose incident was resolved (or closed), and those running longer
    than `drills.max_duration` (a forgotten drill must not reach customers); their ids."""
    d, i = t.drills.c, t.incidents.c
    ids = conn.execute(
        select(d.id)
        .join(t.incidents, i.id == d.incident_id, isouter=True)
        .where(
            d.status == "running",
            or_(
                i.status.in_(("resolved", "closed")),
                d.started_at <= now - settings.drills.max_duration,
            ),
        )
        .order_by(d.id)
    ).scalars()
    ended = []
    for drill_id in list(ids):
        end(conn, settings, drill_id, "nachtwacht", now)
        ended.append(drill_id)
    return ended


def last_ended(conn: Connection, kinds: tuple[str, ...] | None = None) -> dict[str, Any] | None:
    query = select(t.drills).where(t.drills.c.status == "ended")
    if kinds is not None:
        query = query.where(t.drills.c.kind.in_(kinds))
    row = (
        conn.execute(query.order_by(t.drills.c.started_at.desc(), t.drills.c.id.desc()).limit(1))
        .mappings()
        .first()
    )
    return view(dict(row)) if row is not None else None
