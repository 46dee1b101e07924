"""The incident list, the incident page and its actions (acknowledge, update, severity,
commander, escalate, resolve, close, send a message).

Every action calls the same service as its /api/v1/incidents twin; a refusal renders the
incident page again with the message and what was typed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Connection

from nachtwacht.auth.deps import access, actor
from nachtwacht.checklist.gate import resolution_gate
from nachtwacht.incidents import dashboard, escalation
from nachtwacht.incidents import service as incidents
from nachtwacht.incidents.models import OPEN_STATUSES, STATUSES
from nachtwacht.incidents.notifications import send_custom
from nachtwacht.web.render import (
    ActionError,
    Build,
    PageError,
    RowId,
    _act,
    _form,
    _redirect,
    _show,
)

router = APIRouter(include_in_schema=False, dependencies=[Depends(access)])


@router.get("/incidents", response_class=HTMLResponse)
async def incidents_page(
    request: Request,
    status: str = Query("open", description="open, all, or one status"),
    severity: str = Query("", description="1, 2, 3 or empty for all"),
) -> HTMLResponse:
    wanted: tuple[str, ...] | None
    if status == "open":
        wanted = OPEN_STATUSES
    elif status in STATUSES:
        wanted = (status,)
    else:
        status, wanted = "all", None
    level = int(severity) if severity in ("1", "2", "3") else None

    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        rows = incidents.list_incidents(conn, wanted, 500)
        if level is not None:
            rows = [r for r in rows if r["severity"] == level]
        return {
            # what needs a human first, not newest first: an overdue S1 above a fresh S3
            "incidents": dashboard.needs_human_first(rows, now),
            "filter": {"status": status, "severity": severity if level else ""},
            "statuses": STATUSES,
        }

    return await _show(request, "incidents.html", build)


def incident_data(incident_id: int) -> Build:
    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        view = dashboard.incident_view(conn, rt.settings, incident_id, now)
        if view is None:
            raise PageError(f"There is no incident #{incident_id}.")
        return view

    return build


@router.get("/incidents/{incident_id}", response_class=HTMLResponse)
async def incident_page(request: Request, incident_id: RowId) -> HTMLResponse:
    return await _show(request, "incident.html", incident_data(incident_id), form={})


@router.get("/ui/incidents/{incident_id}/timeline", response_class=HTMLResponse)
async def incident_timeline(request: Request, incident_id: RowId) -> HTMLResponse:
    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        inc = incidents.get_incident(conn, incident_id)
        if inc is None:
            raise PageError(f"There is no incident #{incident_id}.")
        return {"inc": inc, "timeline": incidents.timeline(conn, incident_id)}

    return await _show(request, "_timeline.html", build, fragment=True)


async def _incident_action(
    request: Request,
    incident_id: int,
    work: Callable[[Connection, Any, float, dict], Any],
    unless: str | None = None,
) -> Response:
    """Do `work`; a refusal shows the page again with why. With `unless` (acknowledge |
    resolve): when that was already done, the page says by whom and when, and nothing runs."""
    form = await _form(request)
    notes: list[str] = []

    def act(conn: Connection, rt: Any, now: float) -> None:
        if unless is not None:
            inc = incidents.require(conn, incident_id)
            note = incidents.already_done(conn, inc, unless, rt.settings.zone, now)
            if note is not None:
                notes.append(note)
                return
        work(conn, rt, now, form)

    try:
        await _act(request, act)
    except ActionError as exc:
        return await _show(
            request,
            "incident.html",
            incident_data(incident_id),
            status=exc.status_code,
            error=str(exc),
            form=form,
            # which form was sent: update and resolve both have a `message`, and what was
            # typed goes back into the form it was typed in
            form_action=request.url.path.rsplit("/", 1)[-1],
        )
    if notes:
        return await _show(
            request, "incident.html", incident_data(incident_id), notice=notes[0], form={}
        )
    return _redirect(f"/incidents/{incident_id}#timeline")


def _need(form: dict[str, str], field: str, label: str) -> str:
    value = form.get(field, "")
    if not value:
        raise incidents.IncidentError(f"{label} must not be empty", field, kind="invalid")
    return value


@router.post("/incidents/{incident_id}/ack")
async def incident_ack(request: Request, incident_id: RowId) -> Response:
    who = actor(request)
    return await _incident_action(
        request,
        incident_id,
        lambda conn, rt, now, form: incidents.acknowledge(conn, incident_id, who, now),
        unless="acknowledge",
    )


@router.post("/incidents/{incident_id}/update")
async def incident_update(request: Request, incident_id: RowId) -> Response:
    who = actor(request)

    def work(conn: Connection, rt: Any, now: float, form: dict[str, str]) -> None:
        message = _need(form, "message", "The update")
        status = form.get("status") or None
        if status is not None and status not in dashboard.UPDATE_STATUSES:
            raise incidents.IncidentError(
                f"status must be one of {', '.join(dashboard.UPDATE_STATUSES)}",
                "status",
                kind="invalid",
            )
        escalation.post_update(
            conn, rt.settings, incident_id, who, now, message, status, gate=resolution_gate
        )

    return await _incident_action(request, incident_id, work)


@router.post("/incidents/{incident_id}/severity")
async def incident_severity(request: Request, incident_id: RowId) -> Response:
    who = actor(request)

    def work(conn: Connection, rt: Any, now: float, form: dict[str, str]) -> None:
        raw = form.get("severity", "")
        if raw not in ("1", "2", "3"):
            raise incidents.IncidentError("severity must be 1, 2 or 3", "severity", kind="invalid")
        incidents.require(conn, incident_id)
        incidents.set_severity(
            conn, rt.settings, incident_id, int(raw), who, now, form.get("reason", "")
        )

    return await _incident_action(request, incident_id, work)


@router.post("/incidents/{incident_id}/assign")
async def incident_assign(request: Request, incident_id: RowId) -> Response:
    who = actor(request)

    def work(conn: Connection, rt: Any, now: float, form: dict[str, str]) -> None:
        contact = _need(form, "contact", "The commander")
        incidents.require(conn, incident_id)
        people = rt.settings.people
        if people.contacts and people.contact(contact) is None:
            raise incidents.IncidentError(f"no contact '{contact}'", "contact", kind="invalid")
        incidents.assign(conn, incident_id, contact, "commander", who, now)

    return await _incident_action(request, incident_id, work)


@router.post("/incidents/{incident_id}/escalate")
async def incident_escalate(request: Request, incident_id: RowId) -> Response:
    who = actor(request)

    def work(conn: Connection, rt: Any, now: float, form: dict[str, str]) -> None:
        reason = _need(form, "reason", "The reason")
        if len(reason) < 3:
            raise incidents.IncidentError(
                "the reason needs at least 3 characters", "reason", kind="invalid"
            )
        escalation.escalate_now(conn, rt.settings, incident_id, who, now, reason)

    return await _incident_action(request, incident_id, work)


@router.post("/incidents/{incident_id}/resolve")
async def incident_resolve(request: Request, incident_id: RowId) -> Response:
    who = actor(request)
    return await _incident_action(
        request,
        incident_id,
        lambda conn, rt, now, form: escalation.resolve(
            conn,
            rt.settings,
            incident_id,
            who,
            now,
            form.get("message", ""),
            gate=resolution_gate,
            skip_checklist=form.get("skip_checklist") or None,
        ),
        unless="resolve",
    )


@router.post("/incidents/{incident_id}/close")
async def incident_close(request: Request, incident_id: RowId) -> Response:
    who = actor(request)
    return await _incident_action(
        request,
        incident_id,
        lambda conn, rt, now, form: incidents.set_status(conn, incident_id, "closed", who, now),
    )


@router.post("/incidents/{incident_id}/messages")
async def incident_message(request: Request, incident_id: RowId) -> Response:
    """Send an edited template (same service as POST /api/v1/incidents/{id}/messages)."""
    who = actor(request)

    def work(conn: Connection, rt: Any, now: float, form: dict[str, str]) -> None:
        send_custom(
            conn,
            rt.settings,
            incident_id,
            kind=form.get("kind", ""),
            subject=_need(form, "subject", "The subject"),
            body=_need(form, "body", "The message"),
            to=form.get("to", "notified"),
            actor=who,
            now=now,
        )

    return await _incident_action(request, incident_id, work)
