"""The dashboard: server-rendered pages (Jinja2) with htmx fragments for the live parts.

One behaviour, two doors: every action here calls the same service function as its `/api/v1`
twin, in one transaction, and then wakes the outbox. Access follows the API's rule (`access`:
reading needs a viewer, changing anything a responder, and a cookie session must send its CSRF
token, here as the `csrf_token` form field). Forms are plain HTML forms that answer with a
redirect (post/redirect/get), so every action also works without JavaScript; htmx only polls
the parts that change by themselves.

A refused action (an incident already resolved, a bad duration) renders the same page again
with the message and the service's status code, so nothing typed is lost to a redirect.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import parse_qs, quote
from zoneinfo import ZoneInfo

import yaml
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from sqlalchemy import Connection, func, select

from nachtwacht.alerts import windows
from nachtwacht.alerts.maintenance import active_windows
from nachtwacht.auth.deps import (
    LOGIN_FIELD,
    access,
    actor,
    login_form_token,
    optional_principal,
    principal_of,
    safe_next,
    set_login_cookie,
)
from nachtwacht.auth.models import Principal
from nachtwacht.checklist.gate import resolution_gate
from nachtwacht.config import redact
from nachtwacht.incidents import escalation
from nachtwacht.incidents import service as incidents
from nachtwacht.incidents.models import OPEN_STATUSES, STATUSES, describe_target
from nachtwacht.incidents.notifications import (
    EDITABLE_KINDS,
    context_for,
    notified_so_far,
    send_custom,
)
from nachtwacht.notify import reach
from nachtwacht.notify.compose import SEVERITY_NAMES, base_context
from nachtwacht.notify.templates import TemplateError, render
from nachtwacht.oncall import service as oncall
from nachtwacht.probes import service as probes
from nachtwacht.probes.report import SEVERITY
from nachtwacht.probes.uptime import WINDOWS, UptimeCache, uptime
from nachtwacht.store import tables as t

TEMPLATES = FilePath(__file__).parent / "templates"
env = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
# pages carry a CSRF token and incident details: never cached, never framed by another site
HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin"}
GZIP_MIN = 2048  # bytes; below this gzip saves less than a packet

# ids are 32-bit on every backend: a bigger number is a 422, not a driver overflow
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]

# public: the login form
router = APIRouter(include_in_schema=False)
# everything else: the API's rule, applied the same way
protected = APIRouter(include_in_schema=False, dependencies=[Depends(access)])

# ---------------------------------------------------------------------------- states

# state -> (label, icon): the meaning is in words and a symbol, the colour only repeats it
STATES: dict[str, tuple[str, str]] = {
    "ok": ("OK", "✓"),
    "warning": ("WARN", "!"),
    "critical": ("CRIT", "✕"),
    "pending": ("PEND", "…"),
    "new": ("NEW", "·"),
    "unknown": ("UNKN", "?"),
    "maintenance": ("MAINT", "M"),
}
# worst first, for a component's summary badge and the counts line
ORDER = ("critical", "warning", "unknown", "pending", "maintenance", "new", "ok")
STATUS_NAMES = {0: "ok", 1: "warning", 2: "critical", 3: "unknown"}
PREVIEW_KINDS = ("emergency_alert", "status_update", "customer_notice", "resolved")
UPDATE_STATUSES = ("investigating", "mitigating", "monitoring", "resolved")
RANGES = (("1h", 3600), ("24h", 86400), ("7d", 7 * 86400), ("30d", 30 * 86400), ("90d", 90 * 86400))

# ---------------------------------------------------------------------------- secrets


def as_yaml(value: Any) -> str:
    """Config data as YAML; the caller masks it first (nachtwacht.config.redact)."""
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=100)


# ---------------------------------------------------------------------------- formatting


@dataclass(frozen=True)
class Fmt:
    """Times as people on site read them, relative to the server's clock (not the browser's)."""

    now: float
    zone: ZoneInfo

    @cached_property
    def today(self) -> date:
        return datetime.fromtimestamp(self.now, self.zone).date()

    def time(self, ts: float | None, fmt: str = "%Y-%m-%d %H:%M %Z") -> str:
        if ts is None or not math.isfinite(ts):
            return "—"
        return datetime.fromtimestamp(ts, self.zone).strftime(fmt)

    def short(self, ts: float | None) -> str:
        """Today's times as HH:MM:SS, others with their date."""
        if ts is None or not math.isfinite(ts):
            return "—"
        local = datetime.fromtimestamp(ts, self.zone)
        return local.strftime("%H:%M:%S" if local.date() == self.today else "%Y-%m-%d %H:%M")

    def isotime(self, text: str | None) -> str:
        """An ISO 8601 string from a service view, in site time."""
        if not text:
            return "—"
        return self.time(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())

    def iso(self, ts: float | None) -> str:
        return "" if ts is None else datetime.fromtimestamp(ts, self.zone).isoformat()

    def ago(self, ts: float | None) -> str:
        if ts is None:
            return "never"
        delta = self.now - ts
        return f"{span(delta)} ago" if delta >= 0 else f"in {span(-delta)}"

    def until(self, ts: float | None) -> str:
        if ts is None:
            return "—"
        delta = ts - self.now
        return f"in {span(delta)}" if delta >= 0 else f"{span(-delta)} ago"


def span(seconds: float) -> str:
    s = abs(seconds)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def pct(value: float | None) -> str:
    if value is None:
        return "no data"
    if value >= 1:
        return "100 %"
    return f"{math.floor(value * 10000) / 100:.2f} %"  # never round 99.999 up to 100


def uptime_class(value: float | None) -> str:
    if value is None:
        return "none"
    return "good" if value >= 0.999 else ("fair" if value >= 0.99 else "poor")


def number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


env.globals.update(
    STATES=STATES, pct=pct, uptime_class=uptime_class, number=number, span=span, RANGES=RANGES
)

# ---------------------------------------------------------------------------- plumbing


class PageError(Exception):
    def __init__(self, message: str, status_code: int = 404) -> None:
        super().__init__(message)
        self.status_code = status_code


Build = Callable[[Connection, Any, float], dict[str, Any]]


def _cache(request: Request) -> UptimeCache:
    # one per app: the hour sums of each uptime window, valid for up to an hour
    state = request.app.state
    cache = getattr(state, "uptime_cache", None)
    if cache is None:
        cache = UptimeCache()
        state.uptime_cache = cache
    return cache


def _base(request: Request, rt: Any, now: float) -> dict[str, Any]:
    principal: Principal | None = principal_of(request)
    return {
        "site": rt.settings.site,
        "timezone": rt.settings.timezone,
        "now": now,
        "fmt": Fmt(now, rt.settings.zone),
        "user": principal,
        "csrf_token": (principal.csrf_token if principal else None) or "",
        "can_act": bool(principal and principal.allows("responder")),
        "path": request.url.path,
    }


async def _show(
    request: Request, template: str, build: Build, status: int = 200, **extra: Any
) -> HTMLResponse:
    """Gather the data and render, off the event loop (4,000 grid cells are real work)."""
    rt = request.app.state.runtime
    gzip_ok = "gzip" in request.headers.get("accept-encoding", "")

    def work() -> tuple[bytes, dict[str, str], int]:
        now = rt.clock.now()
        context = _base(request, rt, now)
        try:
            with rt.store.connect() as conn:
                context |= build(conn, rt, now)
            html, code = env.get_template(template).render(context | extra), status
        except PageError as exc:
            context |= {"message": str(exc), "title": "Not found"}
            html, code = env.get_template("error.html").render(context), exc.status_code
        body, headers = compressed(html.encode(), gzip_ok)
        return body, headers, code

    body, headers, code = await asyncio.to_thread(work)
    return HTMLResponse(body, status_code=code, headers=headers)


def compressed(body: bytes, gzip_ok: bool) -> tuple[bytes, dict[str, str]]:
    """The body, gzipped when the client takes it and it is worth it.

    The grid of 4,000 probes is a megabyte of HTML polled every 5 s; gzip makes it 50 kB for
    3 ms of CPU, which matters to a responder on a phone's data plan at night.
    """
    headers = dict(HEADERS)
    if not gzip_ok or len(body) < GZIP_MIN:
        return body, headers
    headers |= {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
    return gzip.compress(body, compresslevel=5), headers


async def _form(request: Request) -> dict[str, str]:
    # a plain urlencoded form, parsed here (as the login does) rather than with python-multipart
    raw = (await request.body()).decode("utf-8", "replace")
    return {k: v[0].strip() for k, v in parse_qs(raw, keep_blank_values=True).items()}


async def _act(request: Request, work: Callable[[Connection, Any, float], Any]) -> None:
    """One transaction, then wake the outbox; service refusals come out as ActionError."""
    rt = request.app.state.runtime

    def run() -> None:
        with rt.store.begin() as conn:
            work(conn, rt, rt.clock.now())

    try:
        await asyncio.to_thread(run)
    except (incidents.IncidentError, windows.WindowError, oncall.OncallError) as exc:
        raise ActionError(str(exc), exc.http_status) from None
    rt.wake_outbox()


class ActionError(Exception):
    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# ---------------------------------------------------------------------------- login


LOGIN_ERRORS = {
    "wrong": "Wrong username or password.",
    "locked": "This account is locked for your address after too many wrong passwords. "
    "Wait 15 minutes, or ask an admin to unlock it.",
    "throttled": "Too many failed logins from your address. Wait a minute and try again.",
    "expired": "The login form had expired. Please log in again.",
}


@router.get("/login", response_class=HTMLResponse)
async def login_page(
    request: Request, next: str = Query("/"), error: str | None = Query(None)
) -> Response:
    target = safe_next(next)
    if await optional_principal(request) is not None:
        return _redirect(target)
    rt = request.app.state.runtime
    # login CSRF: the form carries the value of a cookie that only this page sets, which
    # another site's form cannot know
    token = login_form_token(request)
    html = env.get_template("login.html").render(
        site=rt.settings.site,
        next=target,
        # a code from the URL becomes fixed words: a link cannot put its own text on this page
        error=LOGIN_ERRORS.get(error or "", "Please log in again." if error else None),
        user=None,
        path="/login",
        login_field=LOGIN_FIELD,
        login_token=token,
    )
    response = HTMLResponse(html, status_code=200, headers=HEADERS)
    set_login_cookie(response, request, token)
    return response


# ---------------------------------------------------------------------------- overview


def cell_html(cell: dict[str, Any], fmt: Fmt) -> str:
    """One probe's cell in the status grid.

    Written out here rather than in _grid.html: this runs once per probe on every poll, and
    Jinja's attribute lookups and escapes made it most of the overview's time at 4,000 probes.
    """
    state, name = cell["state"], escape(cell["name"])
    label, icon = STATES[state]
    title = f"{cell['check_state']} since {fmt.short(cell['since'])}"
    if cell["maintenance"]:
        title += f", maintenance: {cell['maintenance']}"
    message = cell["message"]
    if message:
        title += f" · {message}"
    extra = f' <span class="pmsg">{escape(message)}</span>' if message and state != "ok" else ""
    href = "/probes/" + quote(cell["name"], safe="")
    return (
        f'<li><a id="p-{name}" class="cell state-{state}" href="{href}"'
        f' data-probe="{name}" data-state="{state}" title="{escape(title)}">'
        f'<span class="badge state-{state}"><span class="icon" aria-hidden="true">{icon}</span>'
        f' {label}</span> <span class="pname">{name}</span>{extra}</a></li>'
    )


def grid_data(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
    """Components with their probes and display states; host metrics; the counts line."""
    settings = rt.settings
    fmt = Fmt(now, settings.zone)
    live = active_windows(conn, settings, now)
    components: dict[str, dict[str, Any]] = {}
    counts = dict.fromkeys(ORDER, 0)
    hosts = []
    level = 0
    rows = probes.probe_overview(conn)
    for p in rows:
        state = p["state"] or "new"
        window = None
        if live:
            window = next((w for w in live if w.covers(p["name"], p["component"])), None)
        shown = "maintenance" if window is not None else state
        counts[shown] += 1
        if window is None:
            # a probe in maintenance does not make the site look down: its window says why
            level = max(level, SEVERITY.get(state, 1))
        cell = {
            "name": p["name"],
            "state": shown,
            "check_state": state,
            "since": p["since"],
            "message": p["last_message"] or "",
            "maintenance": window.name if window is not None else None,
        }
        comp = components.get(p["component"])
        if comp is None:
            comp = components[p["component"]] = {"name": p["component"], "state": "ok", "cells": []}
        comp["cells"].append(cell_html(cell, fmt))
        if ORDER.index(shown) < ORDER.index(comp["state"]):
            comp["state"] = shown
        if p["kind"] == "host":
            cfg = next((c for c in settings.probes if c.name == p["name"]), None)
            hosts.append(
                {
                    **cell,
                    "metric": getattr(cfg, "metric", "host"),
                    "mount": getattr(cfg, "mount", None),
                    "value": p["last_value"],
                    "warn": getattr(cfg, "warn", None),
                    "critical": getattr(cfg, "critical", None),
                }
            )
    for comp in components.values():
        comp["size"] = len(comp["cells"])
        comp["html"] = Markup("".join(comp.pop("cells")))
    return {
        "probe_rows": rows,
        "components": list(components.values()),
        "counts": [(s, counts[s]) for s in ORDER if counts[s]],
        "overall": {0: "ok", 1: "warning", 2: "critical"}[level],
        "hosts": hosts,
        "windows_active": [w.name for w in live],
    }


def sla(inc: dict[str, Any], now: float) -> dict[str, Any]:
    """The response clock of an incident: acknowledged, due, or overdue."""
    due = inc["response_due_at"]
    if inc["acknowledged_at"] is not None:
        late = inc["acknowledged_at"] > due
        return {"state": "late" if late else "met", "due": due, "left": None}
    if inc["status"] not in OPEN_STATUSES:
        return {"state": "closed", "due": due, "left": None}
    left = due - now
    return {"state": "overdue" if left < 0 else "due", "due": due, "left": left}


def incidents_data(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
    rows = incidents.list_incidents(conn, OPEN_STATUSES, 100)
    rows.sort(key=lambda r: (r["severity"], -r["id"]))
    return {"open_incidents": [{**r, "sla": sla(r, now)} for r in rows]}


def uptime_data(
    conn: Connection, now: float, rows: list[dict[str, Any]], cache: UptimeCache
) -> dict[str, Any]:
    found = uptime(conn, now, [p["id"] for p in rows], cache=cache)
    html = []
    for p in rows:
        # like the grid cells, written out here: one row per probe
        name = escape(p["name"])
        values = "".join(
            f'<td class="num up-{uptime_class(v)}">{pct(v)}</td>' for v in found[p["id"]].values()
        )
        html.append(
            f'<tr data-uptime="{name}"><td><a href="/probes/{quote(p["name"], safe="")}">{name}'
            f'</a></td><td class="wide-only">{escape(p["component"])}</td>{values}</tr>'
        )
    return {
        "uptime_rows": Markup("\n".join(html)),
        "uptime_count": len(rows),
        "windows": list(WINDOWS),
    }


@protected.get("/", response_class=HTMLResponse)
async def overview(request: Request) -> HTMLResponse:
    cache = _cache(request)

    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        grid = grid_data(conn, rt, now)
        return (
            grid
            | incidents_data(conn, rt, now)
            | uptime_data(conn, now, grid["probe_rows"], cache)
            | errors_data(conn, now)
            | {"paging_problems": reach.paging_problems(rt.settings)}
        )

    return await _show(request, "overview.html", build)


def errors_data(conn: Connection, now: float) -> dict[str, Any]:
    """Application errors in the last 24 hours (whole hours), from the hourly issue counts."""
    h, i = t.error_issue_hours.c, t.error_issues.c
    since = int(now // 3600) - 23
    events, issues = conn.execute(
        select(func.coalesce(func.sum(h.n), 0), func.count(func.distinct(h.issue_id)))
        .select_from(t.error_issue_hours.join(t.error_issues, i.id == h.issue_id))
        .where(h.hour >= since, i.status == "unresolved")
    ).one()
    new = conn.execute(
        select(func.count()).select_from(t.error_issues).where(i.first_seen >= now - 86400)
    ).scalar_one()
    return {"errors_24h": {"events": int(events), "issues": int(issues), "new": int(new)}}


@protected.get("/ui/overview/grid", response_class=HTMLResponse)
async def overview_grid(request: Request) -> HTMLResponse:
    return await _show(request, "_grid.html", grid_data, fragment=True)


@protected.get("/ui/overview/incidents", response_class=HTMLResponse)
async def overview_incidents(request: Request) -> HTMLResponse:
    return await _show(request, "_incidents.html", incidents_data, fragment=True)


# ---------------------------------------------------------------------------- probes


@protected.get("/probes/{name}", response_class=HTMLResponse)
async def probe_page(request: Request, name: str) -> HTMLResponse:
    cache = _cache(request)

    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        probe = probes.probe_by_name(conn, name)
        if probe is None:
            raise PageError(f"There is no probe named “{name}”.")
        raw = conn.execute(select(t.probes.c.config_json).where(t.probes.c.name == name)).scalar()
        history = probes.state_history(conn, probe["id"], 50)
        results = probes.recent_results(conn, probe["id"], limit=20)
        live = active_windows(conn, rt.settings, now)
        window = next((w for w in live if w.covers(name, probe["component"])), None)
        return {
            "probe": {**probe, "state": probe["state"] or "new"},
            "maintenance": window.name if window is not None else None,
            "config_yaml": as_yaml(redact.probe_shown(json.loads(raw)) if raw else {}),
            "history": history,
            "results": [{**r, "status_name": STATUS_NAMES.get(r["status"], "?")} for r in results],
            "uptime": uptime(conn, now, [probe["id"]], cache=cache)[probe["id"]],
            "windows": list(WINDOWS),
        }

    return await _show(request, "probe.html", build)


# ---------------------------------------------------------------------------- incidents


@protected.get("/incidents", response_class=HTMLResponse)
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
            "incidents": [{**r, "sla": sla(r, now)} for r in rows],
            "filter": {"status": status, "severity": severity if level else ""},
            "statuses": STATUSES,
        }

    return await _show(request, "incidents.html", build)


def escalation_plan(settings: Any, inc: dict[str, Any]) -> dict[str, Any]:
    """The policy's steps with what has fired, the current step and the next one with its time."""
    policy = (
        settings.incidents.policies.get(inc["policy"])
        or (settings.incidents.policy_for(inc["severity"])[1])
    )
    done = inc["next_step"]
    is_open = inc["status"] in OPEN_STATUSES
    steps = []
    for i, step in enumerate(policy.steps):
        state = "done" if i < done else ("next" if i == done and is_open else "later")
        steps.append(
            {
                "number": i + 1,
                "description": step.description or f"escalation step {i + 1}",
                "after": step.after,
                "at": inc["detected_at"] + step.after,
                "notify": step.notify,
                "repeat": step.repeat,
                "action": step.action,
                "state": state,
            }
        )
    current = steps[done - 1] if done > 0 else None
    upcoming = steps[done] if done < len(steps) and is_open else None
    return {
        "steps": steps,
        "current": current,
        "next": upcoming,
        "next_at": inc["next_step_at"] if upcoming else None,
        "policy": inc["policy"],
    }


def previews(
    conn: Connection,
    settings: Any,
    inc: dict[str, Any],
    now: float,
    kinds: tuple[str, ...] = PREVIEW_KINDS,
) -> list[dict]:
    """The notification templates rendered as the outbox would render them now."""
    extra = context_for(conn, settings, inc)
    out = []
    for kind in kinds:
        try:
            ctx = base_context(settings, kind, inc, [], now, extra)
            subject, body = render(kind, ctx, settings.notify.templates_dir)
            out.append({"kind": kind, "subject": subject, "body": body, "error": None})
        except TemplateError as exc:
            out.append({"kind": kind, "subject": "", "body": "", "error": str(exc)})
    return out


def incident_paging(
    conn: Connection, inc: dict[str, Any], timeline: list[dict[str, Any]]
) -> dict[str, Any]:
    """What this incident's pages missed, and whether they reached anybody at all."""
    missed = list(dict.fromkeys(e["message"] for e in timeline if e["kind"] == "not_delivered"))
    queued = conn.execute(
        select(func.count()).select_from(t.outbox).where(t.outbox.c.incident_id == inc["id"])
    ).scalar_one()
    return {"missed": missed, "reached_nobody": bool(inc["paged"]) and not queued}


def incident_data(incident_id: int) -> Build:
    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        settings = rt.settings
        inc = incidents.get_incident(conn, incident_id)
        if inc is None:
            raise PageError(f"There is no incident #{incident_id}.")
        people = settings.people
        roles = []
        for r in incidents.roles(conn, incident_id):
            who = people.contact(r["contact"])
            roles.append({**r, "name": who.name if who else r["contact"]})
        commander = people.contact(inc["commander"]) if inc["commander"] else None
        timeline = incidents.timeline(conn, incident_id)
        return {
            "inc": inc,
            "paging_problems": reach.paging_problems(settings),
            "incident_paging": incident_paging(conn, inc, timeline),
            "is_open": inc["status"] in OPEN_STATUSES,
            "sla": sla(inc, now),
            "target": describe_target(inc["severity"]),
            "severity_name": SEVERITY_NAMES.get(inc["severity"], ""),
            "commander_name": commander.name if commander else inc["commander"],
            "roles": roles,
            "alerts": incidents.alerts_of(conn, incident_id),
            "timeline": timeline,
            "plan": escalation_plan(settings, inc),
            "previews": previews(conn, settings, inc, now),
            # the messages a responder can edit and send: prefilled from their templates
            "drafts": previews(conn, settings, inc, now, EDITABLE_KINDS),
            "notified": [c.name for c in notified_so_far(conn, settings, incident_id)],
            "recipient_roles": sorted({r for c in people.contacts for r in c.roles}),
            "contacts": people.contacts,
            "external": people.external,
            "update_statuses": UPDATE_STATUSES,
        }

    return build


@protected.get("/incidents/{incident_id}", response_class=HTMLResponse)
async def incident_page(request: Request, incident_id: RowId) -> HTMLResponse:
    return await _show(request, "incident.html", incident_data(incident_id), form={})


@protected.get("/ui/incidents/{incident_id}/timeline", response_class=HTMLResponse)
async def incident_timeline(request: Request, incident_id: RowId) -> HTMLResponse:
    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        inc = incidents.get_incident(conn, incident_id)
        if inc is None:
            raise PageError(f"There is no incident #{incident_id}.")
        return {"inc": inc, "timeline": incidents.timeline(conn, incident_id)}

    return await _show(request, "_timeline.html", build, fragment=True)


async def _incident_action(
    request: Request, incident_id: int, work: Callable[[Connection, Any, float, dict], Any]
) -> Response:
    form = await _form(request)
    try:
        await _act(request, lambda conn, rt, now: work(conn, rt, now, form))
    except ActionError as exc:
        return await _show(
            request,
            "incident.html",
            incident_data(incident_id),
            status=exc.status_code,
            error=str(exc),
            form=form,
        )
    return _redirect(f"/incidents/{incident_id}#timeline")


def _need(form: dict[str, str], field: str, label: str) -> str:
    value = form.get(field, "")
    if not value:
        raise incidents.IncidentError(f"{label} must not be empty", field, kind="invalid")
    return value


@protected.post("/incidents/{incident_id}/ack")
async def incident_ack(request: Request, incident_id: RowId) -> Response:
    who = actor(request)
    return await _incident_action(
        request,
        incident_id,
        lambda conn, rt, now, form: incidents.acknowledge(conn, incident_id, who, now),
    )


@protected.post("/incidents/{incident_id}/update")
async def incident_update(request: Request, incident_id: RowId) -> Response:
    who = actor(request)

    def work(conn: Connection, rt: Any, now: float, form: dict[str, str]) -> None:
        message = _need(form, "message", "The update")
        status = form.get("status") or None
        if status is not None and status not in UPDATE_STATUSES:
            raise incidents.IncidentError(
                f"status must be one of {', '.join(UPDATE_STATUSES)}", "status", kind="invalid"
            )
        escalation.post_update(
            conn, rt.settings, incident_id, who, now, message, status, gate=resolution_gate
        )

    return await _incident_action(request, incident_id, work)


@protected.post("/incidents/{incident_id}/severity")
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


@protected.post("/incidents/{incident_id}/assign")
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


@protected.post("/incidents/{incident_id}/escalate")
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


@protected.post("/incidents/{incident_id}/resolve")
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
    )


@protected.post("/incidents/{incident_id}/close")
async def incident_close(request: Request, incident_id: RowId) -> Response:
    who = actor(request)
    return await _incident_action(
        request,
        incident_id,
        lambda conn, rt, now, form: incidents.set_status(conn, incident_id, "closed", who, now),
    )


@protected.post("/incidents/{incident_id}/messages")
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


# ---------------------------------------------------------------------------- on call


@protected.get("/oncall", response_class=HTMLResponse)
async def oncall_page(request: Request) -> HTMLResponse:
    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        return {
            "oncall": oncall.overview(conn, rt.settings, now),
            "overrides": oncall.list_overrides(conn, rt.settings, now),
        }

    return await _show(request, "oncall.html", build)


# ---------------------------------------------------------------------------- settings


def settings_data(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
    settings = rt.settings
    return {
        "config_yaml": as_yaml(redact.settings_shown(settings)),
        "maintenance": windows.list_windows(conn, settings, now),
        "components": settings.component_names(),
    }


@protected.get("/settings", response_class=HTMLResponse)
async def settings_page(request: Request) -> HTMLResponse:
    return await _show(request, "settings.html", settings_data, form={})


def _names(text: str) -> list[str]:
    return [n.strip() for n in re.split(r"[,\s]+", text) if n.strip()]


async def _settings_action(
    request: Request, work: Callable[[Connection, Any, float, dict], Any]
) -> Response:
    form = await _form(request)
    try:
        await _act(request, lambda conn, rt, now: work(conn, rt, now, form))
    except ActionError as exc:
        return await _show(
            request,
            "settings.html",
            settings_data,
            status=exc.status_code,
            error=str(exc),
            form=form,
        )
    return _redirect("/settings#maintenance")


@protected.post("/settings/maintenance")
async def maintenance_add(request: Request) -> Response:
    who = actor(request)

    def work(conn: Connection, rt: Any, now: float, form: dict[str, str]) -> None:
        start, end = windows.span(
            now,
            rt.settings.zone,
            start=form.get("starts_at") or None,
            end=form.get("ends_at") or None,
            duration=form.get("duration") or None,
        )
        windows.add_window(
            conn,
            rt.settings,
            name=form.get("name", ""),
            starts_at=start,
            ends_at=end,
            now=now,
            created_by=who,
            components=_names(form.get("components", "")),
            probes=_names(form.get("probes", "")),
            comment=form.get("comment", ""),
        )

    return await _settings_action(request, work)


@protected.post("/settings/maintenance/{window_id}/end")
async def maintenance_end(request: Request, window_id: RowId) -> Response:
    return await _settings_action(
        request, lambda conn, rt, now, form: windows.end_window(conn, window_id, now)
    )


router.include_router(protected)

__all__ = ["as_yaml", "router"]
