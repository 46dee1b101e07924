"""/api/v1/incidents and the acknowledge links: thin wrappers over the incident services.

Why one module of some 400 lines: the incident verbs (acknowledge, update, severity, assign,
escalate, note, resolve) and the acknowledge links are one resource; each route is thin.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from nachtwacht.alerts.maintenance import alert_muted_by
from nachtwacht.auth.deps import IGNORED_ACTOR, actor
from nachtwacht.checklist.gate import resolution_gate
from nachtwacht.config import limits
from nachtwacht.engine.runtime import Runtime
from nachtwacht.incidents import escalation, notifications, serialise, service
from nachtwacht.incidents.models import OPEN_STATUSES
from nachtwacht.web.pagination import Page, page, set_headers
from nachtwacht.web.state import runtime_of

router = APIRouter(tags=["incidents"])

# row ids are 32-bit in every store (MariaDB INT); a larger one is a 422 naming the parameter,
# not an integer overflow in the driver
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
T = TypeVar("T")


def _rt(request: Request) -> Runtime:
    return runtime_of(request)


async def _write(request: Request, work: Callable[..., T]) -> T:
    """Run `work(conn, runtime, now)` in one transaction; wake the outbox afterwards."""
    rt = _rt(request)

    def run() -> T:
        with rt.store.begin() as conn:
            return work(conn, rt, rt.clock.now())

    result = await asyncio.to_thread(run)
    rt.wake_outbox()
    return result


class Declare(BaseModel):
    title: str = Field(min_length=3, max_length=limits.TITLE)
    severity: Literal[1, 2, 3]
    component: str | None = Field(None, max_length=limits.NAME)
    impact: str | None = Field(None, max_length=limits.TEXT)
    commander: str | None = Field(None, max_length=limits.CONTACT)
    actor: str = Field("api", deprecated=True, description=IGNORED_ACTOR)


class Actor(BaseModel):
    actor: str = Field("api", deprecated=True, description=IGNORED_ACTOR)


class Update(BaseModel):
    message: str = Field(min_length=1, max_length=limits.TEXT)
    status: Literal["investigating", "mitigating", "monitoring", "resolved"] | None = None
    actor: str = Field("api", deprecated=True, description=IGNORED_ACTOR)


class SeverityChange(BaseModel):
    severity: Literal[1, 2, 3]
    reason: str = Field("", max_length=limits.TEXT)
    actor: str = Field("api", deprecated=True, description=IGNORED_ACTOR)


class Assign(BaseModel):
    contact: str = Field(max_length=limits.CONTACT)
    role: Literal["commander", "responder"] = "responder"
    actor: str = Field("api", deprecated=True, description=IGNORED_ACTOR)


class Escalate(BaseModel):
    reason: str = Field(min_length=3, max_length=limits.TEXT)
    actor: str = Field("api", deprecated=True, description=IGNORED_ACTOR)


class Note(BaseModel):
    text: str = Field(min_length=1, max_length=limits.TEXT)
    actor: str = Field("api", deprecated=True, description=IGNORED_ACTOR)


class Resolve(BaseModel):
    message: str = Field("", max_length=limits.TEXT)
    actor: str = Field("api", deprecated=True, description=IGNORED_ACTOR)
    skip_checklist: str | None = Field(
        None,
        max_length=2000,
        description="S1/S2: why the restoration checklist is skipped (else it must have passed)",
    )


def _contact(rt: Runtime, contact: str) -> None:
    if rt.settings.people.contacts and rt.settings.people.contact(contact) is None:
        raise service.IncidentError(f"no contact '{contact}'", "contact", kind="invalid")


@router.get("/api/v1/incidents")
async def list_incidents(
    request: Request,
    response: Response,
    status: Literal[
        "open", "all", "investigating", "mitigating", "monitoring", "resolved", "closed"
    ] = "open",
    pg: Page = Depends(page),
) -> list[dict[str, Any]]:
    rt = _rt(request)
    wanted = OPEN_STATUSES if status == "open" else (None if status == "all" else (status,))

    def work() -> list[dict[str, Any]]:
        with rt.store.connect() as conn:
            rows = service.list_incidents(conn, wanted, pg.limit, pg.offset)
            set_headers(request, response, pg, service.count_incidents(conn, wanted))
        now = rt.clock.now()
        return [serialise.summary(r, now) for r in rows]

    return await asyncio.to_thread(work)


@router.post("/api/v1/incidents", status_code=201)
async def declare(request: Request, body: Declare) -> dict[str, Any]:
    who = actor(request)

    def work(conn, rt: Runtime, now: float) -> dict[str, Any]:  # noqa: ANN001
        if body.commander:
            _contact(rt, body.commander)
        incident_id = service.open_incident(
            conn,
            rt.settings,
            title=body.title,
            severity=body.severity,
            now=now,
            component=body.component,
            origin="declared",
            impact=body.impact,
            actor=who,
            commander=body.commander,
        )
        escalation.advance(conn, rt.settings, incident_id, now, alert_muted_by)
        return serialise.detail(conn, rt.settings, incident_id, now)

    return await _write(request, work)


@router.get("/api/v1/incidents/{incident_id}")
async def show(request: Request, incident_id: RowId) -> dict[str, Any]:
    rt = _rt(request)

    def work() -> dict[str, Any]:
        with rt.store.connect() as conn:
            return serialise.detail(conn, rt.settings, incident_id, rt.clock.now())

    return await asyncio.to_thread(work)


def _action(incident_id: int, fn: Callable[..., Any]) -> Callable[..., dict[str, Any]]:
    def work(conn, rt: Runtime, now: float) -> dict[str, Any]:  # noqa: ANN001
        fn(conn, rt, now)
        return serialise.detail(conn, rt.settings, incident_id, now)

    return work


@router.post("/api/v1/incidents/{incident_id}/ack")
async def ack(request: Request, incident_id: RowId, body: Actor | None = None) -> dict[str, Any]:
    who = actor(request)
    return await _write(
        request,
        _action(incident_id, lambda c, rt, now: service.acknowledge(c, incident_id, who, now)),
    )


@router.post("/api/v1/incidents/{incident_id}/updates")
async def update(request: Request, incident_id: RowId, body: Update) -> dict[str, Any]:
    who = actor(request)
    return await _write(
        request,
        _action(
            incident_id,
            lambda c, rt, now: escalation.post_update(
                c,
                rt.settings,
                incident_id,
                who,
                now,
                body.message,
                body.status,
                gate=resolution_gate,
            ),
        ),
    )


@router.post("/api/v1/incidents/{incident_id}/severity")
async def severity(request: Request, incident_id: RowId, body: SeverityChange) -> dict[str, Any]:
    who = actor(request)
    return await _write(
        request,
        _action(
            incident_id,
            lambda c, rt, now: service.set_severity(
                c, rt.settings, incident_id, body.severity, who, now, body.reason
            ),
        ),
    )


@router.post("/api/v1/incidents/{incident_id}/assign")
async def assign(request: Request, incident_id: RowId, body: Assign) -> dict[str, Any]:
    who = actor(request)

    def fn(c, rt: Runtime, now: float) -> None:  # noqa: ANN001
        service.require(c, incident_id)
        _contact(rt, body.contact)
        service.assign(c, incident_id, body.contact, body.role, who, now)

    return await _write(request, _action(incident_id, fn))


@router.post("/api/v1/incidents/{incident_id}/escalate")
async def escalate(request: Request, incident_id: RowId, body: Escalate) -> dict[str, Any]:
    who = actor(request)
    return await _write(
        request,
        _action(
            incident_id,
            lambda c, rt, now: escalation.escalate_now(
                c, rt.settings, incident_id, who, now, body.reason
            ),
        ),
    )


@router.post("/api/v1/incidents/{incident_id}/notes")
async def note(request: Request, incident_id: RowId, body: Note) -> dict[str, Any]:
    who = actor(request)
    return await _write(
        request,
        _action(
            incident_id,
            lambda c, rt, now: service.add_note(c, incident_id, who, now, body.text),
        ),
    )


@router.post("/api/v1/incidents/{incident_id}/resolve")
async def resolve(
    request: Request, incident_id: RowId, body: Resolve | None = None
) -> dict[str, Any]:
    body = body or Resolve()
    who = actor(request)
    return await _write(
        request,
        _action(
            incident_id,
            lambda c, rt, now: escalation.resolve(
                c,
                rt.settings,
                incident_id,
                who,
                now,
                body.message,
                gate=resolution_gate,
                skip_checklist=body.skip_checklist,
            ),
        ),
    )


@router.post("/api/v1/incidents/{incident_id}/close")
async def close(request: Request, incident_id: RowId, body: Actor | None = None) -> dict[str, Any]:
    who = actor(request)
    return await _write(
        request,
        _action(
            incident_id, lambda c, rt, now: service.set_status(c, incident_id, "closed", who, now)
        ),
    )


class CustomMessage(BaseModel):
    kind: Literal["status_update", "emergency_notification", "customer_notice"]
    subject: str = Field(min_length=1, max_length=notifications.MAX_SUBJECT)
    body: str = Field(min_length=1, max_length=notifications.MAX_BODY)
    to: str = Field(
        "notified",
        max_length=200,
        description="'notified' (everyone notified so far), 'role:NAME' or 'contact:ID'",
    )


@router.post("/api/v1/incidents/{incident_id}/messages", status_code=201)
async def send_message(request: Request, incident_id: RowId, body: CustomMessage) -> dict[str, Any]:
    """Send an edited status update, notification or customer notice through the outbox."""
    who = actor(request)
    return await _write(
        request,
        lambda c, rt, now: notifications.send_custom(
            c,
            rt.settings,
            incident_id,
            kind=body.kind,
            subject=body.subject,
            body=body.body,
            to=body.to,
            actor=who,
            now=now,
        ),
    )


# -- acknowledge links from notifications ---------------------------------------------------
# GET only shows the incident and a button: mail scanners and link previews fetch GET links,
# and must not acknowledge a page on the responder's behalf.


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        f"<title>{html.escape(title)}</title>"
        # a stylesheet, not style attributes: the Content-Security-Policy allows no inline style
        "<link rel=stylesheet href=/static/ack.css>"
        f"<body>{body}</body>",
        status_code=status,
    )


def _over(inc: dict[str, Any], zone: tzinfo) -> HTMLResponse:
    """The link of an incident that is over: say so, offer nothing to acknowledge."""
    when = inc["resolved_at"] or inc["closed_at"]
    at = f" at {datetime.fromtimestamp(when, zone):%Y-%m-%d %H:%M %Z}" if when else ""
    return _page(
        "Resolved",
        f"<h1>#{inc['id']} is already {html.escape(inc['status'])}</h1>"
        f"<p>{html.escape(inc['title'])}</p><p>It was {html.escape(inc['status'])}{at}; "
        "there is nothing to acknowledge and nothing was recorded.</p>",
    )


# public: the token in the link is the credential (only those paged have it)
ack_router = APIRouter(tags=["incidents"])


@ack_router.get("/ack/{token}", response_class=HTMLResponse, include_in_schema=False)
async def ack_page(request: Request, token: str) -> HTMLResponse:
    rt = _rt(request)

    def work() -> dict[str, Any] | None:
        with rt.store.connect() as conn:
            return service.by_ack_token(conn, token)

    inc = await asyncio.to_thread(work)
    if inc is None:
        return _page("Unknown link", "<h1>Unknown or expired link</h1>", 404)
    title = html.escape(inc["title"])
    if inc["status"] not in OPEN_STATUSES:
        return _over(inc, rt.settings.zone)
    if inc["acknowledged_at"] is not None:
        return _page("Acknowledged", f"<h1>#{inc['id']} already acknowledged</h1><p>{title}</p>")
    return _page(
        "Acknowledge",
        f"<h1>S{inc['severity']} incident #{inc['id']}</h1><p>{title}</p>"
        f"<form method=post><label>Your name <input name=actor required></label> "
        "<button>Acknowledge</button></form>",
    )


@ack_router.post("/ack/{token}", response_class=HTMLResponse, include_in_schema=False)
async def ack_link(request: Request, token: str) -> HTMLResponse:
    # a plain urlencoded form: parsed here rather than pulling in python-multipart
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    actor = (form.get("actor") or ["link"])[0].strip()[:60] or "link"

    def work(conn, rt: Runtime, now: float) -> dict[str, Any] | None:  # noqa: ANN001
        inc = service.by_ack_token(conn, token)
        if inc is None:
            return None
        if inc["status"] in OPEN_STATUSES:
            try:
                service.acknowledge(conn, inc["id"], f"{actor} (link)", now)
            except service.IncidentError:
                # resolved between the two reads: say so, as for a link opened later
                return service.require(conn, inc["id"])
        return inc

    inc = await _write(request, work)
    if inc is None:
        return _page("Unknown link", "<h1>Unknown or expired link</h1>", 404)
    if inc["status"] not in OPEN_STATUSES:
        # nothing was recorded: thanking them would say a page was needed and answered
        return _over(inc, _rt(request).settings.zone)
    return _page(
        "Acknowledged", f"<h1>#{inc['id']} acknowledged</h1><p>Thank you, {html.escape(actor)}.</p>"
    )
