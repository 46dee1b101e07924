"""The status page's doors in HTML: the public page (no login) and the admins' page.

Public, at `status_page.path` (and at `/` of `status_page.host`, see `HostRouting`):
the page, its Atom feed, its JSON, the subscribe form, and the confirm and unsubscribe links.
The page and feed are rendered from `view.ViewCache`, so a crowd costs one build every few
seconds; a subscription request is refused by its size and the per-address limit before the
store is touched, and its answer never says whether an address was known.

Behind the login: `/statuspage` lists the drafts with Approve / Discard and an edit form, and
`/ui/incidents/{id}/status-page` is the panel the incident page loads.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from nachtwacht.auth.deps import access, actor, client_ip, principal_of
from nachtwacht.config.schema import Settings
from nachtwacht.problems import Problem
from nachtwacht.statuspage import feed, notices, subscribers
from nachtwacht.statuspage.service import PUBLIC_STATUSES, STATUS_WORDS, title
from nachtwacht.statuspage.view import ViewCache
from nachtwacht.web.errors import ApiError
from nachtwacht.web.render import (
    ActionError,
    Fmt,
    RowId,
    _act,
    _form,
    _redirect,
    _show,
    env,
)
from nachtwacht.web.state import runtime_of

log = logging.getLogger(__name__)
FORM_BYTES = 2048  # an e-mail address and a little: anything bigger is not a subscription
SAID = (
    "Thank you. If the address can receive mail, a confirmation link is on its way; "
    "nothing is sent until it is followed."
)


def _cache(request: Request) -> ViewCache:
    state = request.app.state
    found = getattr(state, "statuspage_cache", None)
    if found is None:
        found = state.statuspage_cache = ViewCache()
    return found


def _limiter(request: Request, settings: Settings) -> subscribers.SubscribeLimiter:
    state = request.app.state
    found = getattr(state, "statuspage_limiter", None)
    if found is None:
        found = state.statuspage_limiter = subscribers.SubscribeLimiter(
            settings.status_page.subscribe_per_hour
        )
    return found


def _headers(settings: Settings) -> dict[str, str]:
    return {"Cache-Control": f"public, max-age={int(settings.status_page.cache_for)}"}


async def _view(request: Request) -> tuple[dict[str, Any], Any, float]:
    rt = runtime_of(request)
    now = rt.clock.now()
    data = await asyncio.to_thread(_cache(request).view, rt.store.connect, rt.settings, now)
    return data, rt, now


def _page(template: str, rt: Any, now: float, status: int = 200, **context: Any) -> HTMLResponse:
    settings = rt.settings
    html = env.get_template(template).render(
        fmt=Fmt(now, settings.zone),
        page_title=title(settings),
        base=settings.status_page.path,
        words=STATUS_WORDS,
        **context,
    )
    # the answer to one visitor's form or link: not for a shared cache
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def public(settings: Settings) -> APIRouter:
    """The public routes, at the configured path."""
    base = settings.status_page.path
    router = APIRouter(include_in_schema=False)

    @router.get(base, response_class=HTMLResponse)
    async def status_page(request: Request) -> Response:
        data, rt, now = await _view(request)
        body = _cache(request).rendered(
            "html",
            now,
            rt.settings.status_page.cache_for,
            lambda: (
                env.get_template("status_page.html")
                .render(
                    view=data,
                    fmt=Fmt(now, rt.settings.zone),
                    base=base,
                    words=STATUS_WORDS,
                    email=subscribers.channel(rt.settings, "email") is not None,
                )
                .encode()
            ),
        )
        return Response(body, media_type="text/html; charset=utf-8", headers=_headers(rt.settings))

    @router.get(base + "/feed.atom")
    async def atom(request: Request) -> Response:
        rt = runtime_of(request)
        now = rt.clock.now()

        def make() -> bytes:
            with rt.store.connect() as conn:
                return feed.render(rt.settings, feed.latest(conn), now)

        body = await asyncio.to_thread(
            _cache(request).rendered, "atom", now, rt.settings.status_page.cache_for, make
        )
        return Response(body, media_type="application/atom+xml", headers=_headers(rt.settings))

    @router.get(base + "/status.json")
    async def as_json(request: Request) -> JSONResponse:
        data, rt, _ = await _view(request)
        return JSONResponse(data, headers=_headers(rt.settings))

    @router.post(base + "/subscribe", response_class=HTMLResponse)
    async def subscribe(request: Request) -> Response:
        rt = runtime_of(request)
        now = rt.clock.now()
        size = request.headers.get("content-length", "")
        if not size.isdigit() or int(size) > FORM_BYTES:
            return _page("status_message.html", rt, now, 413, message="That request is too big.")
        if not _limiter(request, rt.settings).allow(client_ip(request) or "?"):
            return _page(
                "status_message.html", rt, now, 429, message="Too many requests; try later."
            )
        form = await _form(request)

        def work() -> str:
            with rt.store.begin() as conn:
                return subscribers.subscribe_email(conn, rt.settings, form.get("email", ""), now)

        try:
            outcome = await asyncio.to_thread(work)
        except Problem as exc:
            return _page("status_message.html", rt, now, exc.http_status, message=str(exc))
        log.info("status page subscription: %s", outcome)
        rt.wake_outbox()
        return _page("status_message.html", rt, now, 202, message=SAID)

    for action, verb, done in (
        ("confirm", "Confirm my subscription", "Confirmed: you will receive the notices."),
        ("unsubscribe", "Unsubscribe", "Unsubscribed: no more notices will be sent."),
    ):
        _token_routes(router, base, action, verb, done)
    return router


def _token_routes(router: APIRouter, base: str, action: str, verb: str, done: str) -> None:
    # GET shows a button, POST acts: mail scanners fetch links and must not act for anyone
    @router.get(f"{base}/{action}/{{token}}", response_class=HTMLResponse)
    async def show(request: Request, token: str) -> HTMLResponse:
        rt = runtime_of(request)
        now = rt.clock.now()
        found = subscribers.valid_token(token)
        return _page(
            "status_message.html",
            rt,
            now,
            200 if found else 404,
            message=None if found else "This link is not valid.",
            action=f"{base}/{action}/{token}" if found else None,
            verb=verb,
        )

    @router.post(f"{base}/{action}/{{token}}", response_class=HTMLResponse)
    async def act(request: Request, token: str) -> HTMLResponse:
        rt = runtime_of(request)
        now = rt.clock.now()
        change = subscribers.confirm if action == "confirm" else subscribers.unsubscribe

        def work() -> bool:
            with rt.store.begin() as conn:
                return change(conn, token, now)

        ok = await asyncio.to_thread(work)
        message = done if ok else "This link is not valid (any more)."
        return _page("status_message.html", rt, now, 200 if ok else 404, message=message)

    show.__name__ = f"status_{action}_page"
    act.__name__ = f"status_{action}"


class HostRouting:
    """Requests for `status_page.host` get the status page: every path is taken as the
    status page's own (`/` is the page, `/feed.atom` its feed); `/static` and the page's own
    path (which its links name) stay as they are."""

    def __init__(self, app: Any, host: str, path: str) -> None:
        self.app = app
        self.host = host.lower().encode()
        self.path = path

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            host = dict(scope.get("headers") or []).get(b"host", b"").split(b":")[0].lower()
            path = scope["path"]
            # the page's own links (form, feed) name its path: those are left as they are
            mine = path == self.path or path.startswith(self.path + "/")
            if host == self.host and not mine and not path.startswith("/static/"):
                path = self.path if path == "/" else self.path + path
                scope = {**scope, "path": path, "raw_path": path.encode()}
        await self.app(scope, receive, send)


# -- behind the login ---------------------------------------------------------------------------

router = APIRouter(include_in_schema=False, dependencies=[Depends(access)])


def _admin_data(incident_id: int | None) -> Any:
    def build(conn: Any, rt: Any, now: float) -> dict[str, Any]:
        return {
            "notices": notices.list_notices(conn, incident_id, None, 50),
            "counts": subscribers.counts(conn),
            "statuses": PUBLIC_STATUSES,
            "public_components": list(rt.settings.status_page.components),
            "enabled": rt.settings.status_page.enabled,
            "page_path": rt.settings.status_page.path,
            "incident_id": incident_id,
            "title": "Status page",
        }

    return build


@router.get("/statuspage", response_class=HTMLResponse)
async def admin_page(request: Request) -> HTMLResponse:
    return await _show(request, "statuspage_admin.html", _admin_data(None), form={})


@router.get("/ui/incidents/{incident_id}/status-page", response_class=HTMLResponse)
async def incident_panel(request: Request, incident_id: RowId) -> HTMLResponse:
    return await _show(
        request, "_status_panel.html", _admin_data(incident_id), fragment=True, form={}
    )


async def _notice_action(request: Request, work: Any, back: str) -> Response:
    form = await _form(request)
    try:
        await _act(request, lambda conn, rt, now: work(conn, rt, now, form))
    except ActionError as exc:
        return await _show(
            request,
            "statuspage_admin.html",
            _admin_data(None),
            status=exc.status_code,
            error=str(exc),
            form=form,
        )
    _cache(request).clear()
    return _redirect(form.get("back") or back)


@router.post("/statuspage/draft")
async def draft_notice(request: Request) -> Response:
    who = actor(request)

    def work(conn: Any, rt: Any, now: float, form: dict[str, str]) -> None:
        raw = form.get("incident_id", "")
        if not raw.isdigit() or not 0 < int(raw) < 2**31:
            raise PageProblem("incident_id must be an incident number", "incident_id")
        notices.draft(conn, rt.settings, int(raw), who, now)

    return await _notice_action(request, work, "/statuspage")


@router.post("/statuspage/notices/{notice_id}/{what}")
async def notice_action(request: Request, notice_id: RowId, what: str) -> Response:
    if what not in ("approve", "discard", "edit"):
        raise ApiError(404, f"no such action: {what}")
    who = actor(request)
    principal = principal_of(request)
    role = principal.role if principal is not None else "viewer"

    def work(conn: Any, rt: Any, now: float, form: dict[str, str]) -> None:
        if what == "approve":
            notices.approve(conn, rt.settings, notice_id, who, role, now)
        elif what == "discard":
            notices.discard(conn, notice_id, who, now)
        elif what == "edit":
            notices.edit(
                conn,
                rt.settings,
                notice_id,
                now,
                title=form.get("title"),
                body=form.get("body"),
                public_status=form.get("public_status") or None,
                components=[c.strip() for c in form["components"].split(",") if c.strip()]
                if "components" in form
                else None,
            )

    return await _notice_action(request, work, "/statuspage")


class PageProblem(Problem):
    """A form field the admin page cannot take."""
