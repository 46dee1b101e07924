"""JSON API routes under /api/v1 (protected by `access`, mounted in web/app.py).

/api/v1/projects: list (viewer), add (admin). /api/v1/errors/issues: list, show (viewer),
resolve / ignore / unresolve (responder; audited as `error_issue.<action>`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from nachtwacht.auth.deps import actor, client_ip, require
from nachtwacht.errors import issues, projects
from nachtwacht.errors.ingest_api import key_cache
from nachtwacht.web.pagination import Page, page, set_headers
from nachtwacht.web.state import runtime_of

router = APIRouter(tags=["errors"])
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
T = TypeVar("T")


async def _run(request: Request, work: Callable[[Connection, float], T], write: bool) -> T:
    rt = runtime_of(request)

    def run() -> T:
        now = rt.clock.now()
        if write:
            with rt.store.begin() as conn:
                return work(conn, now)
        with rt.store.connect() as conn:
            return work(conn, now)

    return await asyncio.to_thread(run)


def _base(request: Request) -> str:
    """The DSN host: `errors.public_url`, else the address this request came to."""
    settings = runtime_of(request).settings
    if settings.errors.public_url:
        return projects.base_url(settings)
    return str(request.base_url).rstrip("/")


# -- projects --------------------------------------------------------------------------------


class NewProject(BaseModel):
    name: str = Field(min_length=1, max_length=120)
    environment: str | None = Field(None, min_length=1, max_length=64)


@router.get("/api/v1/projects")
async def list_projects(request: Request) -> list[dict[str, Any]]:
    """Projects with their DSN and how many events and issues they have."""
    base = _base(request)
    return await _run(request, lambda conn, now: projects.list_projects(conn, base), False)


@router.post("/api/v1/projects", status_code=201, dependencies=[Depends(require("admin"))])
async def add_project(request: Request, body: NewProject) -> dict[str, Any]:
    """Add a project; the answer carries its DSN for the application's Sentry SDK."""
    base, who, ip = _base(request), actor(request), client_ip(request)
    made = await _run(
        request,
        lambda conn, now: projects.add_project(
            conn, body.name, now, actor=who, base=base, environment=body.environment, ip=ip
        ),
        True,
    )
    key_cache(request).invalidate()
    return made


# -- issues ----------------------------------------------------------------------------------


@router.get("/api/v1/errors/issues")
async def list_issues(
    request: Request,
    response: Response,
    status: Literal["unresolved", "resolved", "ignored", "all"] = "unresolved",
    project: str | None = Query(None, max_length=120, description="A project's name."),
    query: str | None = Query(None, max_length=200, description="Text in title or culprit."),
    sort: Literal["last_seen", "count", "first_seen"] = "last_seen",
    pg: Page = Depends(page),
) -> list[dict[str, Any]]:
    """Issues, newest activity first (or by count, or by first seen); paginated."""

    def work(conn: Connection, now: float) -> list[dict[str, Any]]:
        rows, total = issues.list_issues(
            conn,
            status=status,
            project=project,
            text=query,
            sort=sort,
            limit=pg.limit,
            offset=pg.offset,
        )
        set_headers(request, response, pg, total)
        counts = issues.hourly(conn, [r["id"] for r in rows], now, 24)
        return [{**r, "hours_24h": counts[r["id"]]} for r in rows]

    return await _run(request, work, False)


@router.get("/api/v1/errors/issues/{issue_id}")
async def show_issue(request: Request, issue_id: RowId) -> dict[str, Any]:
    """An issue with its latest event (stack trace, tags), counts per hour (24 h) and per day
    (14 d), and its 20 most recent events."""
    return await _run(request, lambda conn, now: issues.detail(conn, issue_id, now), False)


async def _change(request: Request, issue_id: int, action: str) -> dict[str, Any]:
    who, ip = actor(request), client_ip(request)
    return await _run(
        request,
        lambda conn, now: issues.set_status(conn, issue_id, action, who, now, ip),
        True,
    )


@router.post("/api/v1/errors/issues/{issue_id}/resolve")
async def resolve_issue(request: Request, issue_id: RowId) -> dict[str, Any]:
    """Resolved; a later event reopens it as a regression."""
    return await _change(request, issue_id, "resolve")


@router.post("/api/v1/errors/issues/{issue_id}/ignore")
async def ignore_issue(request: Request, issue_id: RowId) -> dict[str, Any]:
    """Ignored: new events are counted but do not reopen it."""
    return await _change(request, issue_id, "ignore")


@router.post("/api/v1/errors/issues/{issue_id}/unresolve")
async def unresolve_issue(request: Request, issue_id: RowId) -> dict[str, Any]:
    """Back to unresolved."""
    return await _change(request, issue_id, "unresolve")
