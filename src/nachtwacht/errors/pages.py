"""Dashboard pages (mounted in web/app.py behind `access`); helpers come from web.render.

/errors lists issues with a 24 h trend; /errors/{id} shows one with its latest event and
stack trace. Resolve, ignore and unresolve are plain forms posting to the same service as
the API (`issues.set_status`), audited the same way.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Connection

from nachtwacht.auth.deps import access, actor, client_ip
from nachtwacht.errors import issues
from nachtwacht.errors.projects import list_projects
from nachtwacht.web.render import ActionError, PageError, RowId, _act, _redirect, _show

router = APIRouter(include_in_schema=False, dependencies=[Depends(access)])
PAGE_SIZE = 100


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.get("/errors", response_class=HTMLResponse)
async def errors_page(
    request: Request,
    status: str = Query("unresolved"),
    project: str = Query(""),
    q: str = Query("", max_length=200),
    sort: str = Query("last_seen"),
    offset: int = Query(0, ge=0, le=1_000_000),
) -> HTMLResponse:
    if status not in (*issues.STATUSES, "all"):
        status = "unresolved"
    if sort not in issues.SORTS:
        sort = "last_seen"
    base = _base_url(request)

    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        known = list_projects(conn, base)
        chosen = project if any(p["name"] == project for p in known) else ""
        rows, total = issues.list_issues(
            conn,
            status=status,
            project=chosen or None,
            text=q or None,
            sort=sort,
            limit=PAGE_SIZE,
            offset=offset,
        )
        counts = issues.hourly(conn, [r["id"] for r in rows], now, 24)
        return {
            "title": "Errors",
            "issues": [{**r, "trend": counts[r["id"]]} for r in rows],
            "total": total,
            "offset": offset,
            "page_size": PAGE_SIZE,
            "projects": known,
            "filter": {"status": status, "project": chosen, "q": q, "sort": sort},
            "statuses": ("unresolved", "resolved", "ignored", "all"),
            "sorts": tuple(issues.SORTS),
            "categories": issues.by_category(conn, now - 86400),
        }

    return await _show(request, "errors.html", build)


def issue_data(issue_id: int) -> Any:
    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        try:
            data = issues.detail(conn, issue_id, now)
        except issues.IssueError as exc:
            raise PageError(str(exc), exc.http_status) from None
        return {"title": data["title"], "issue": data}

    return build


@router.get("/errors/{issue_id}", response_class=HTMLResponse)
async def issue_page(request: Request, issue_id: RowId) -> HTMLResponse:
    return await _show(request, "errors_issue.html", issue_data(issue_id))


async def _change(request: Request, issue_id: int, action: str) -> Response:
    who, ip = actor(request), client_ip(request)

    def work(conn: Connection, rt: Any, now: float) -> None:
        try:
            issues.set_status(conn, issue_id, action, who, now, ip)
        except issues.IssueError as exc:
            raise ActionError(str(exc), exc.http_status) from None

    try:
        await _act(request, work)
    except ActionError as exc:
        return await _show(
            request, "errors_issue.html", issue_data(issue_id), status=exc.status_code,
            error=str(exc),
        )  # fmt: skip
    return _redirect(f"/errors/{issue_id}")


@router.post("/errors/{issue_id}/resolve")
async def resolve(request: Request, issue_id: RowId) -> Response:
    return await _change(request, issue_id, "resolve")


@router.post("/errors/{issue_id}/ignore")
async def ignore(request: Request, issue_id: RowId) -> Response:
    return await _change(request, issue_id, "ignore")


@router.post("/errors/{issue_id}/unresolve")
async def unresolve(request: Request, issue_id: RowId) -> Response:
    return await _change(request, issue_id, "unresolve")
