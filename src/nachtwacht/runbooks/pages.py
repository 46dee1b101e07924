"""The Runbooks panel of the incident page, and the /runbooks page.

The incident page loads `/ui/incidents/{id}/runbooks` (htmx, outerHTML into #runbooks-panel).
A responder starts a runbook there step by step: the run waits before every step and the
panel shows that step with its buttons: Run (or Done for a manual step, Confirm and run for a
destructive one), Skip, Refuse. Each button is a plain POST form with the session's CSRF
token that redirects back to the incident page (post/redirect/get), so it works without
JavaScript. The step runs inside the request; a command's timeout bounds how long it takes.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Connection

from nachtwacht.auth.deps import access
from nachtwacht.incidents import dashboard
from nachtwacht.incidents import service as incidents
from nachtwacht.runbooks import service
from nachtwacht.runbooks.api import runner, who
from nachtwacht.runbooks.runner import Policy, RunError, is_action
from nachtwacht.store.db import StoreError
from nachtwacht.web.render import PageError, _form, _redirect, _show
from nachtwacht.web.state import runtime_of

router = APIRouter(include_in_schema=False, dependencies=[Depends(access)])
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
RUNS_SHOWN = 10
# a step's status as a badge state of the dashboard's stylesheet
STATE = {
    "ok": "ok",
    "failed": "critical",
    "refused": "critical",
    "skipped": "unknown",
    "waiting": "pending",
    "planned": "pending",
    "running": "pending",
    "succeeded": "ok",
    "partly_failed": "warning",
    "escalated": "critical",
}


# the protocol's Immediate Response Protocol (0-15 minutes), runbooks/builtin
FIRST_RUNBOOK = "immediate-response"


def panel_data(incident_id: int) -> Any:
    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        inc = incidents.get_incident(conn, incident_id)
        if inc is None:
            raise PageError(f"There is no incident #{incident_id}.")
        runbooks, problems = service.catalog(rt.settings)
        # the protocol runs the immediate response first for any S1/S2: list it first and
        # have it chosen, so the responder woken at night need not look for it
        runbooks.sort(key=lambda r: r["name"] != FIRST_RUNBOOK)
        runs = [
            service.run_view(conn, r["id"])
            for r in service.list_runs(conn, incident_id, None, RUNS_SHOWN)
        ]
        for run in runs:
            run["waiting_destructive"] = run["status"] == "waiting" and _destructive(
                rt.settings, run["runbook"], run["next_step"]
            )
        return {
            "inc": inc,
            "runbooks": runbooks,
            "problems": problems,
            "runs": runs,
            "busy": any(r["status"] == "running" for r in runs),
            "run_state": STATE,
            "first_runbook": FIRST_RUNBOOK,
        }

    return build


def incident_data(incident_id: int) -> Any:
    """The incident page's data (the page a refusal here renders again)."""

    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        view = dashboard.incident_view(conn, rt.settings, incident_id, now)
        if view is None:
            raise PageError(f"There is no incident #{incident_id}.")
        return view

    return build


def _destructive(settings: Any, name: str, number: int) -> bool:
    """Whether step `number` (1-based) of a runbook is destructive: its button says so."""
    try:
        steps = service.detail(settings, name)["steps"]
    except RunError:
        return True  # unknown now: ask for the stronger confirmation
    return number <= len(steps) and bool(steps[number - 1]["destructive"])


@router.get("/ui/incidents/{incident_id}/runbooks", response_class=HTMLResponse)
async def runbooks_panel(request: Request, incident_id: RowId) -> HTMLResponse:
    return await _show(request, "_runbooks_panel.html", panel_data(incident_id), fragment=True)


async def _refused(request: Request, incident_id: int, exc: Exception, status: int) -> Response:
    """The incident page again, with why (as the incident page's own actions do)."""
    return await _show(
        request, "incident.html", incident_data(incident_id), status=status, error=str(exc), form={}
    )


@router.post("/incidents/{incident_id}/runbooks")
async def start(request: Request, incident_id: RowId) -> Response:
    """Start a runbook on this incident: step by step, or as a dry run."""
    form = await _form(request)
    name = form.get("runbook", "")
    dry = form.get("mode") == "dry_run"
    try:
        await runner(request).start(
            name,
            who=who(request),
            incident_id=incident_id,
            dry_run=dry,
            policy=Policy(step_by_step=True),
        )
    except RunError as exc:
        return await _refused(request, incident_id, exc, exc.http_status)
    except StoreError as exc:
        return await _refused(request, incident_id, exc, 503)
    return _redirect(f"/incidents/{incident_id}#runbooks-panel")


@router.post("/incidents/{incident_id}/runbook-runs/{run_id}")
async def step(request: Request, incident_id: RowId, run_id: RowId) -> Response:
    """Answer the waiting step (run | skip | refuse); the run then waits before the next."""
    form = await _form(request)
    action = form.get("action", "")
    if not is_action(action):
        return await _refused(
            request, incident_id, ValueError("action must be run, skip or refuse"), 422
        )
    rt = runtime_of(request)

    def belongs() -> bool:
        with rt.store.connect() as conn:
            return service.run_view(conn, run_id)["incident_id"] == incident_id

    try:
        if not await asyncio.to_thread(belongs):
            raise RunError(
                f"run {run_id} is not a run of incident #{incident_id}", "run_id", kind="not_found"
            )
        await runner(request).resume(
            run_id,
            who=who(request),
            action=action,
            policy=Policy(step_by_step=True),
        )
    except RunError as exc:
        return await _refused(request, incident_id, exc, exc.http_status)
    except StoreError as exc:
        return await _refused(request, incident_id, exc, 503)
    return _redirect(f"/incidents/{incident_id}#runbooks-panel")


@router.get("/runbooks", response_class=HTMLResponse)
async def runbooks_page(request: Request) -> HTMLResponse:
    """Every runbook with its steps as they would run here, and the latest runs."""

    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        rows, problems = service.catalog(rt.settings)
        details = []
        for r in rows:
            try:
                details.append(service.detail(rt.settings, r["name"]))
            except RunError as exc:
                problems.append(str(exc))
        return {
            "runbooks": details,
            "problems": problems,
            "runs": service.list_runs(conn, None, None, 50),
            "run_state": STATE,
        }

    return await _show(request, "runbooks.html", build)
