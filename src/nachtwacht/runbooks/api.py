"""/api/v1/runbooks and /api/v1/runbook-runs: thin wrappers over the runbook services.

A run started here goes as far as it can in the request: it stops at a manual step (resume
it with POST /api/v1/runbook-runs/{id}/resume) and runs destructive steps only with
`confirm: true` (refused and recorded otherwise). Reading needs a viewer, running a
responder (the router's `access` rule); destructive steps check the role again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field

from nachtwacht.auth.deps import actor, principal_of
from nachtwacht.config import limits
from nachtwacht.runbooks import service
from nachtwacht.runbooks.runner import Policy, RunError, Runner, Who
from nachtwacht.web.pagination import Page, page, set_headers
from nachtwacht.web.state import runtime_of

router = APIRouter(tags=["runbooks"])
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Name = Annotated[str, Path(min_length=1, max_length=120, pattern=r"^[a-z0-9][a-z0-9_-]*$")]


class RunRequest(BaseModel):
    incident_id: int | None = Field(None, ge=1, le=2**31 - 1)
    dry_run: bool = False
    confirm: bool = Field(False, description="Run destructive steps (else they are refused).")
    vars: dict[
        Annotated[str, Field(max_length=limits.NAME)],
        Annotated[str, Field(max_length=limits.RUNBOOK_INPUT)],
    ] = Field(
        default_factory=dict, max_length=limits.RUNBOOK_INPUTS, description="The runbook's inputs."
    )


class ResumeRequest(BaseModel):
    action: Literal["run", "skip", "refuse"] = Field(
        "run", description="For the waiting step: run (confirm) it, skip it or refuse it."
    )
    confirm: bool = Field(False, description="Run later destructive steps too.")


def who(request: Request) -> Who:
    principal = principal_of(request)
    return Who(actor(request), principal.role if principal is not None else "viewer")


def runner(request: Request) -> Runner:
    rt = runtime_of(request)
    return Runner(rt.store, rt.settings, rt.clock, rt.wake_outbox)


async def _view(request: Request, run_id: int) -> dict[str, Any]:
    rt = runtime_of(request)

    def work() -> dict[str, Any]:
        with rt.store.connect() as conn:
            return service.run_view(conn, run_id)

    return await asyncio.to_thread(work)


@router.get("/api/v1/runbooks")
async def list_runbooks(request: Request) -> list[dict[str, Any]]:
    """Every runbook; a user file that does not load is listed with its `error`."""
    rows, problems = await asyncio.to_thread(service.catalog, runtime_of(request).settings)
    broken = [
        {"name": FilePath(p.split(":", 1)[0]).stem, "source": p.split(":", 1)[0], "error": p}
        for p in problems
    ]
    return rows + broken


@router.get("/api/v1/runbooks/{name}")
async def show_runbook(request: Request, name: Name) -> dict[str, Any]:
    """A runbook's steps as they would run here (variables filled in, secrets masked)."""
    return await asyncio.to_thread(service.detail, runtime_of(request).settings, name)


@router.post("/api/v1/runbooks/{name}/runs", status_code=201)
async def start_run(request: Request, name: Name, body: RunRequest) -> dict[str, Any]:
    policy = Policy(destructive="yes" if body.confirm else "no", manual="pause")
    try:
        run_id = await runner(request).start(
            name,
            who=who(request),
            incident_id=body.incident_id,
            inputs=body.vars,
            dry_run=body.dry_run,
            policy=policy,
        )
    except RunError as exc:
        field = exc.field
        if field not in (None, "incident_id", "name", "vars"):
            field = f"vars.{field}"  # an input's name
        raise RunError(exc.message, field, exc.kind) from None
    return await _view(request, run_id)


@router.get("/api/v1/runbook-runs")
async def list_runs(
    request: Request,
    response: Response,
    incident_id: int | None = Query(None, ge=1, le=2**31 - 1),
    runbook: str | None = Query(None, max_length=120),
    pg: Page = Depends(page),
) -> list[dict[str, Any]]:
    rt = runtime_of(request)

    def work() -> list[dict[str, Any]]:
        with rt.store.connect() as conn:
            rows = service.list_runs(conn, incident_id, runbook, pg.limit, pg.offset)
            set_headers(request, response, pg, service.count_runs(conn, incident_id, runbook))
        return rows

    return await asyncio.to_thread(work)


@router.get("/api/v1/runbook-runs/{run_id}")
async def show_run(request: Request, run_id: RowId) -> dict[str, Any]:
    """A run with every step: status, start, end, attempts, exit code, output, confirmed by."""
    return await _view(request, run_id)


@router.post("/api/v1/runbook-runs/{run_id}/resume")
async def resume_run(
    request: Request, run_id: RowId, body: ResumeRequest | None = None
) -> dict[str, Any]:
    """Answer the step a waiting run waits at, then go on until the next stop."""
    body = body or ResumeRequest()
    policy = Policy(destructive="yes" if body.confirm else "no", manual="pause")
    await runner(request).resume(run_id, who=who(request), action=body.action, policy=policy)
    return await _view(request, run_id)
