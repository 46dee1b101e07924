"""/api/v1/incidents and the acknowledge links: thin wrappers over the incident services.

Why one module of some 500 lines: the incident verbs (acknowledge, update, severity, assign,
escalate, note, resolve) and the acknowledge links (a small page of their own, for a phone) are
one resource; each route is a thin adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from nachtwacht.alerts.maintenance import alert_muted_by
from nachtwacht.auth.deps import IGNORED_ACTOR, actor, optional_principal
from nachtwacht.auth.models import Principal
from nachtwacht.checklist.gate import resolution_gate
from nachtwacht.config import limits
from nachtwacht.engine.runtime import Runtime
from nachtwacht.incidents import escalation, notifications, serialise, service
from nachtwacht.incidents.models import OPEN_STATUSES, describe_target
from nachtwacht.notify.compose import SEVERITY_NAMES
from nachtwacht.oncall.models import Contact
from nachtwacht.web.errors import ApiError
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


def _action(
    incident_id: int, fn: Callable[..., Any], unless: str | None = None
) -> Callable[..., dict[str, Any]]:
    """`fn`, then the incident. With `unless` (acknowledge | resolve): when that was already
    done, nothing runs and the answer (still 200) carries `already`, saying by whom and when."""

    def work(conn, rt: Runtime, now: float) -> dict[str, Any]:  # noqa: ANN001
        note = None
        if unless is not None:
            inc = service.require(conn, incident_id)
            note = service.already_done(conn, inc, unless, rt.settings.zone, now)
        if note is None:
            fn(conn, rt, now)
        out = serialise.detail(conn, rt.settings, incident_id, now)
        return out | {"already": note} if note else out

    return work


@router.post("/api/v1/incidents/{incident_id}/ack")
async def ack(request: Request, incident_id: RowId, body: Actor | None = None) -> dict[str, Any]:
    who = actor(request)
    return await _write(
        request,
        _action(
            incident_id,
            lambda c, rt, now: service.acknowledge(c, incident_id, who, now),
            unless="acknowledge",
        ),
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
            unless="resolve",
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
#
# Who acknowledges: the token in the link names the incident, not a recipient (every page of
# an incident carries the same link). So a signed-in browser acknowledges as its user; anyone
# else picks themselves from the contacts this incident was sent to (all contacts when none
# was yet), instead of typing a name.


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang=en><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title>"
        # a stylesheet, not style attributes: the Content-Security-Policy allows no inline style
        "<link rel=stylesheet href=/static/ack.css>"
        f"<body><main class=ack>{body}</main></body></html>",
        status_code=status,
    )


def _clock(ts: float, zone: tzinfo) -> str:
    return f"{datetime.fromtimestamp(ts, zone):%H:%M}"


def _ago(seconds: float) -> str:
    minutes = round(abs(seconds) / 60)
    if minutes < 1:
        return "less than a minute"
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes / 60:.1f} h"


def _heading(inc: dict[str, Any]) -> str:
    level = inc["severity"]
    return (
        f"<p class='sev sev-{level}'>S{level} {SEVERITY_NAMES.get(level, '')}</p>"
        f"<h1 id=ack-title>#{inc['id']} {html.escape(inc['title'])}</h1>"
    )


def _facts(inc: dict[str, Any], zone: tzinfo, now: float) -> str:
    detected, due = inc["detected_at"], inc["response_due_at"]
    left = due - now
    deadline = (
        f"<strong class=overdue>overdue by {_ago(left)}</strong>"
        if left < 0
        else f"in {_ago(left)}"
    )
    return (
        "<dl class=facts>"
        f"<dt>Since</dt><dd id=ack-since>{_clock(detected, zone)} "
        f"<span class=muted>({_ago(now - detected)} ago)</span></dd>"
        f"<dt>Respond by</dt><dd id=ack-deadline>{_clock(due, zone)} "
        f"<span class=muted>({describe_target(inc['severity'])})</span> {deadline}</dd>"
        "</dl>"
    )


def _already(inc: dict[str, Any], zone: tzinfo) -> HTMLResponse:
    who = html.escape(inc["acknowledged_by"] or "someone")
    return _page(
        "Already acknowledged",
        _heading(inc)
        + f"<p id=ack-result class=done>Already acknowledged by <strong>{who}</strong> "
        f"at {_clock(inc['acknowledged_at'], zone)}. Nothing else to do here.</p>",
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


async def _signed_in(request: Request) -> Principal | None:
    """The browser's signed-in user, if any: the page is public, a bad credential is no one."""
    try:
        return await optional_principal(request)
    except ApiError:
        return None


def _as_whom(principal: Principal | None, candidates: list[Contact]) -> str:
    if principal is not None:
        return (
            f"<p id=ack-as>You are acknowledging as <strong>{html.escape(principal.name)}"
            "</strong> (signed in).</p>"
        )
    if not candidates:  # nobody configured to page: a name is all there is to go on
        return (
            "<p id=ack-as><label for=ack-name>You are acknowledging as</label> "
            "<input id=ack-name name=actor required maxlength=60 autocomplete=name></p>"
        )
    options = "".join(
        f"<label class=who><input type=radio name=contact value='{html.escape(c.id)}' required"
        f"{' checked' if len(candidates) == 1 else ''}> {html.escape(c.name)}"
        + (f" <span class=muted>{html.escape(', '.join(c.roles))}</span>" if c.roles else "")
        + "</label>"
        for c in candidates
    )
    return (
        "<fieldset id=ack-as><legend>You are acknowledging as</legend>"
        f"{options}<p class=muted>This link was sent to everyone paged for this incident: "
        "pick yourself.</p></fieldset>"
    )


def _candidates(conn: Any, settings: Any, incident_id: int) -> list[Contact]:
    return notifications.notified_so_far(conn, settings, incident_id) or list(
        settings.people.contacts
    )


# public: the token in the link is the credential (only those paged have it)
ack_router = APIRouter(tags=["incidents"])


@ack_router.get("/ack/{token}", response_class=HTMLResponse, include_in_schema=False)
async def ack_page(request: Request, token: str) -> HTMLResponse:
    rt = _rt(request)
    principal = await _signed_in(request)

    def work() -> tuple[dict[str, Any] | None, list[Contact]]:
        with rt.store.connect() as conn:
            inc = service.by_ack_token(conn, token)
            if inc is None:
                return None, []
            return inc, _candidates(conn, rt.settings, inc["id"])

    inc, candidates = await asyncio.to_thread(work)
    if inc is None:
        return _page("Unknown link", "<h1>Unknown or expired link</h1>", 404)
    zone = rt.settings.zone
    if inc["status"] not in OPEN_STATUSES:
        return _over(inc, zone)
    if inc["acknowledged_at"] is not None:
        return _already(inc, zone)
    return _page(
        f"Acknowledge #{inc['id']}",
        _heading(inc)
        + _facts(inc, zone, rt.clock.now())
        + "<form method=post>"
        + _as_whom(principal, candidates)
        + f"<button id=ack-button>Acknowledge #{inc['id']}</button>"
        "<p class=muted>Stops the repeating pages; the timeline records you as the responder."
        "</p></form>",
    )


@ack_router.post("/ack/{token}", response_class=HTMLResponse, include_in_schema=False)
async def ack_link(request: Request, token: str) -> HTMLResponse:
    # a plain urlencoded form: parsed here rather than pulling in python-multipart
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    principal = await _signed_in(request)
    contact_id = (form.get("contact") or [""])[0].strip()
    # `actor`: the free-text name of the older page, still accepted from links already open
    typed = (form.get("actor") or [""])[0].strip()[:60]

    def work(conn, rt: Runtime, now: float) -> tuple[dict[str, Any] | None, str, bool]:  # noqa: ANN001
        inc = service.by_ack_token(conn, token)
        if inc is None:
            return None, "", False
        people = {c.id: c for c in rt.settings.people.contacts}
        if principal is not None:
            who = principal.name
        elif contact_id in people:
            who = f"{people[contact_id].name} (link)"
        else:
            who = f"{typed or 'link'} (link)"
        done = False
        # resolved between the two reads: say so, as for a link opened later
        with contextlib.suppress(service.IncidentError):
            done = inc["status"] in OPEN_STATUSES and service.acknowledge(conn, inc["id"], who, now)
        return service.require(conn, inc["id"]), who, done

    inc, who, done = await _write(request, work)
    if inc is None:
        return _page("Unknown link", "<h1>Unknown or expired link</h1>", 404)
    zone = _rt(request).settings.zone
    if inc["status"] not in OPEN_STATUSES:
        # nothing was recorded: thanking them would say a page was needed and answered
        return _over(inc, zone)
    if not done:
        return _already(inc, zone)
    return _page(
        "Acknowledged",
        _heading(inc)
        + f"<p id=ack-result class=done>Acknowledged as <strong>{html.escape(who)}</strong> "
        f"at {_clock(inc['acknowledged_at'], zone)}. The repeating pages stop. Thank you.</p>"
        f"<p><a href='/incidents/{inc['id']}'>Open the incident</a></p>",
    )
