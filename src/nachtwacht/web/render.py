"""Shared rendering of the dashboard's pages: templates, formatting, and the page plumbing.

Each domain's pages live in its `pages.py` (auth, probes, incidents, oncall, alerts, errors,
analytics, runbooks, reviews) and the overview that combines them in web/overview.py; they
all render through here. One behaviour, two doors: every action calls the same service
function as its `/api/v1` twin, in one transaction (`_act`), and then wakes the outbox. Access
follows the API's rule (`access`: reading needs a viewer, changing anything a responder, and a
cookie session must send its CSRF token, here as the `csrf_token` form field). Forms are plain
HTML forms that answer with a redirect (post/redirect/get), so every action also works without
JavaScript; htmx only polls the parts that change by themselves.

A refused action (an incident already resolved, a bad duration) renders the same page again
with the message and the service's status code, so nothing typed is lost to a redirect.
"""

from __future__ import annotations

import asyncio
import gzip
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import yaml
from fastapi import Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Connection

from nachtwacht.auth.deps import principal_of
from nachtwacht.auth.models import Principal
from nachtwacht.probes.uptime import UptimeCache
from nachtwacht.problems import Problem
from nachtwacht.web.state import app_state, runtime_of

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

# ---------------------------------------------------------------------------- states

# state -> (label, icon): the meaning is in words and a symbol, the colour only repeats it
STATES: dict[str, tuple[str, str]] = {
    "ok": ("OK", "✓"),
    "warning": ("WARN", "!"),
    "critical": ("CRIT", "✕"),
    "pending": ("PEND", "…"),
    "new": ("NEW", "·"),
    "unknown": ("UNKN", "?"),
    "degraded": ("DEGR", "◐"),  # a probe with locations failing at fewer than its quorum
    "silent": ("SILENT", "…"),  # an agent that stopped reporting
    "maintenance": ("MAINT", "M"),
}
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
        return "no data yet"  # nothing checked in the window: not 0 %, and not alarming
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
    return app_state(request).uptime_cache


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
    rt = runtime_of(request)
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
    rt = runtime_of(request)

    def run() -> None:
        with rt.store.begin() as conn:
            work(conn, rt, rt.clock.now())

    try:
        await asyncio.to_thread(run)
    except Problem as exc:
        raise ActionError(str(exc), exc.http_status) from None
    rt.wake_outbox()


class ActionError(Exception):
    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)
