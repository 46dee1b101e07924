"""The on-call page: who is on call now and next, and the overrides."""

from __future__ import annotations

import asyncio
import html
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import Connection

from nachtwacht.auth.deps import access
from nachtwacht.oncall import service as oncall
from nachtwacht.oncall import verify
from nachtwacht.web.render import _show
from nachtwacht.web.state import runtime_of

router = APIRouter(include_in_schema=False, dependencies=[Depends(access)])


@router.get("/oncall", response_class=HTMLResponse)
async def oncall_page(request: Request) -> HTMLResponse:
    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        return {
            "oncall": oncall.overview(conn, rt.settings, now),
            "overrides": oncall.list_overrides(conn, rt.settings, now),
            "verification": verify.by_contact(verify.state(conn, rt.settings, now)),
        }

    return await _show(request, "oncall.html", build)


# -- the confirm link of a contact verification: public, the token is the credential ----------

verify_router = APIRouter(include_in_schema=False)


def _verify_page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang=en><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title>"
        # a stylesheet, not style attributes: the Content-Security-Policy allows no inline style
        "<link rel=stylesheet href=/static/ack.css>"
        f"<body><main class=ack>{body}</main></body></html>",
        status_code=status,
    )


def _refused(exc: verify.VerifyError) -> HTMLResponse:
    status = 404 if exc.kind == "not_found" else 410
    return _verify_page(
        "Link not usable",
        f"<h1>This link cannot be used</h1><p id=verify-error>{html.escape(exc.message)}.</p>"
        "<p class=muted>Nothing was changed. Ask the operations team for a new link "
        "(<code>nachtwacht contacts verify</code>).</p>",
        status,
    )


def _what(settings: Any, row: dict[str, Any]) -> str:
    contact = settings.people.contact(row["contact"])
    name = contact.name if contact else row["contact"]
    cfg = settings.notify.channels.get(row["channel"])
    words = verify.KIND_WORDS.get(cfg.kind, cfg.kind) if cfg else row["channel"]
    return (
        f"<strong>{html.escape(name)}</strong>, {html.escape(words)} "
        f"<strong>{html.escape(row['address'] or '')}</strong>"
    )


@verify_router.get(verify.PATH + "{token}", response_class=HTMLResponse)
async def verify_page(request: Request, token: str) -> HTMLResponse:
    """Shows the button only: a link scanner that follows the link confirms nothing."""
    rt = runtime_of(request)

    def work() -> dict[str, Any]:
        with rt.store.connect() as conn:
            return verify.lookup(conn, token, rt.clock.now())

    try:
        row = await asyncio.to_thread(work)
    except verify.VerifyError as exc:
        return _refused(exc)
    if row["status"] == "confirmed":
        return _verify_page(
            "Confirmed",
            f"<h1>Already confirmed</h1><p id=verify-done>{_what(rt.settings, row)}.</p>",
        )
    return _verify_page(
        "Confirm contact",
        "<h1>Confirm this channel reaches you</h1>"
        f"<p>{_what(rt.settings, row)} ({html.escape(rt.settings.site)}).</p>"
        "<form method=post><button id=verify-button>Confirm</button></form>"
        "<p class=muted>Nachtwacht pages you this way in an emergency.</p>",
    )


@verify_router.post(verify.PATH + "{token}", response_class=HTMLResponse)
async def verify_confirm(request: Request, token: str) -> HTMLResponse:
    rt = runtime_of(request)

    def work() -> dict[str, Any]:
        with rt.store.begin() as conn:
            return verify.confirm(conn, token, rt.clock.now())

    try:
        row = await asyncio.to_thread(work)
    except verify.VerifyError as exc:
        return _refused(exc)
    return _verify_page(
        "Confirmed",
        f"<h1>Thank you</h1><p id=verify-done>Confirmed: {_what(rt.settings, row)}.</p>",
    )
