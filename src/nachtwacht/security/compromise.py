"""A likely compromise gets the security runbook attached to its incident.

Nachtwacht had no way yet to attach a runbook to an incident other than a person starting
one; this is the one the incident page already shows: a run of `security-incident` linked to
the incident, `waiting` at its first step with `suspicious_ip` set to the address the login
came from. Nothing runs until a responder presses the step's button (the panel's
step-by-step mode), and each step is then confirmed and recorded as any run's is.

Decisions:

- The run row is written in the transaction that records the finding, so the incident and
  its runbook are committed together or not at all: a crash cannot leave an S1 without it.
- One run per (incident, address): a compromise deduplicated into the same alert, or a second
  poll seeing it, does not attach another; another address in the same incident does.
- A runbook that cannot be loaded (a broken override in the runbooks dir) or an address the
  runbook's input refuses (not an IP) does not stop the finding: the run is attached without
  the address, or not at all, and the timeline says which.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from sqlalchemy import Connection, select

from nachtwacht.alerts.service import Outcome
from nachtwacht.config.schema import Settings
from nachtwacht.incidents import service as incidents
from nachtwacht.runbooks.record import RunError
from nachtwacht.runbooks.runner import find
from nachtwacht.runbooks.steps import describe
from nachtwacht.runbooks.variables import VariableError, variables
from nachtwacht.security.models import BRUTE_FORCE_SUCCESS, Finding
from nachtwacht.store import tables as t
from nachtwacht.store.db import inserted_id

log = logging.getLogger(__name__)

RUNBOOK = "security-incident"
ACTOR = "security"
INPUT = "suspicious_ip"


def address_of(finding: Finding) -> str:
    if finding.addr:
        return finding.addr
    return "" if finding.key.startswith("user:") else finding.key


def attach_runbooks(
    conn: Connection,
    settings: Settings,
    findings: Sequence[Finding],
    outcomes: Sequence[Outcome],
    now: float,
) -> list[int]:
    """The runs attached for the firing compromises among `findings` (`outcomes` in order)."""
    runs: list[int] = []
    for finding, outcome in zip(findings, outcomes, strict=True):
        if finding.rule != BRUTE_FORCE_SUCCESS or not finding.firing:
            continue
        if outcome.incident_id is None:  # muted (maintenance, a silence): no incident
            continue
        run_id = attach(conn, settings, outcome.incident_id, address_of(finding), now)
        if run_id is not None:
            runs.append(run_id)
    return runs


def attach(
    conn: Connection, settings: Settings, incident_id: int, address: str, now: float
) -> int | None:
    """Attach the security runbook, waiting at its first step, to an incident (None: it was
    already attached for this address, or cannot be loaded)."""
    r = t.runbook_runs.c
    for (inputs_json,) in conn.execute(
        select(r.inputs_json).where(r.incident_id == incident_id, r.runbook == RUNBOOK)
    ):
        if json.loads(inputs_json or "{}").get(INPUT, "") == address:
            return None
    try:
        loaded = find(settings, RUNBOOK)
    except RunError as exc:
        log.warning("security runbook not attached to incident %s: %s", incident_id, exc)
        incidents.add_event(
            conn,
            incident_id,
            now,
            "runbook",
            ACTOR,
            f"runbook {RUNBOOK} not attached: {exc}"[:500],
            {"runbook": RUNBOOK},
        )
        return None
    inputs = {INPUT: address} if address else {}
    try:
        values = variables(settings, loaded.runbook, inputs, incident_id)
    except VariableError:
        inputs = {}
        values = variables(settings, loaded.runbook, inputs, incident_id)
    steps = loaded.steps
    first = steps[0]
    summary = f"waiting at step 1 {first.id} for a go-ahead"
    run_id = inserted_id(
        conn.execute(
            t.runbook_runs.insert().values(
                runbook=loaded.name,
                incident_id=incident_id,
                status="waiting",
                dry_run=False,
                started_by=ACTOR,
                started_at=now,
                next_step=0,
                inputs_json=json.dumps(inputs),
                definition_sha256=loaded.sha256,
                summary=summary,
            )
        )
    )
    conn.execute(
        t.runbook_steps.insert().values(
            run_id=run_id,
            idx=0,
            name=first.id,
            kind=first.kind,  # type: ignore[attr-defined]
            status="waiting",
            started_at=now,
            attempts=0,
            output=describe(first, values, plan=True)[: settings.runbooks.output_limit],
        )
    )
    given = f"{INPUT}={address}" if inputs else f"no {INPUT} (the address '{address}' is not one)"
    incidents.add_event(
        conn,
        incident_id,
        now,
        "runbook",
        ACTOR,
        f"runbook {loaded.name} attached by the security watch for a likely compromise, "
        f"with {given}: {loaded.runbook.title} ({len(steps)} steps), {summary}"[:1000],
        {"runbook": loaded.name, "run_id": run_id, INPUT: inputs.get(INPUT, "")},
    )
    return run_id
