"""FastAPI dependencies: who is asking, may they, and did the request come from our own pages.

A request is authenticated by `Authorization: Bearer <API token>` or by the session cookie
`nw_session`. Cookie sessions must also prove, on every request that changes something, that
the request came from a Nachtwacht page: the `X-CSRF-Token` header or the `csrf_token` form
field must equal the session's CSRF token (a page on another site can make the browser send
the cookie, but cannot read the token). Token requests are exempt: a browser never adds an
`Authorization` header on its own.

Mount with `app.include_router(router, dependencies=[Depends(access)])`: GET/HEAD need a
viewer, every other method a responder. Handlers needing more use `Depends(require("admin"))`.

What the dependencies need from the app: its `web.state.AppState`, whose runtime has `store`,
`clock` and `settings` (the `auth:` section is optional: defaults apply without it).

Why one module of some 510 lines: it is the one door every other domain's door may import (the
import contract's DOOR_SHARED), so who is asking, what they may do, the CSRF and cookie rules
and the audit hook stay together where every door finds them; each section below is small.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import Query, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy import Connection

from nachtwacht.auth import audit as auth_audit
from nachtwacht.auth import ingest_keys, passwords, sessions, tokens
from nachtwacht.auth.checks import AuthError, auth_settings
from nachtwacht.auth.models import AuthSettings, Principal
from nachtwacht.store.db import StoreError
from nachtwacht.web.errors import ApiError
from nachtwacht.web.refused import refuse
from nachtwacht.web.state import runtime_of, state_of

SESSION_COOKIE = "nw_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
# login CSRF: the login page sets this cookie and puts the same value in this hidden field
LOGIN_COOKIE = "nw_login"
LOGIN_FIELD = "login_csrf"
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{32,64}")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_REQUIRED = "login required"
T = TypeVar("T")
log = logging.getLogger(__name__)


# -- what the app provides -------------------------------------------------------------------


def settings_of(request: Request) -> AuthSettings:
    return auth_settings(runtime_of(request).settings)


def client_ip(request: Request) -> str | None:
    # uvicorn puts the proxy's X-Forwarded-For here when the proxy is trusted
    # (--forwarded-allow-ips, 127.0.0.1 by default), so this is the real client behind nginx
    return request.client.host if request.client else None


def cookie_secure(request: Request) -> bool:
    """Secure on https, and always when `server.secure_cookies` is set (TLS ended by a proxy
    that uvicorn does not trust, so the request looks like plain http)."""
    if request.url.scheme == "https":
        return True
    server = getattr(runtime_of(request).settings, "server", None)
    return bool(getattr(server, "secure_cookies", False))


async def run_in_store(request: Request, work: Callable[[Connection, float], T]) -> T:
    """Run `work(conn, now)` in one transaction off the event loop (an AuthError is a Problem,
    which web/errors.py answers)."""
    rt = runtime_of(request)

    def run() -> T:
        now = rt.clock.now()
        with rt.store.begin() as conn:
            return work(conn, now)

    return await asyncio.to_thread(run)


AGENT_PREFIX = "nwa_"  # agents.service's tokens: refused here, whatever the route


# -- who is asking ---------------------------------------------------------------------------


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


async def optional_principal(request: Request) -> Principal | None:
    """The principal of this request, or None when it carries no credentials at all.

    A bearer token that is wrong is an error (401), not an anonymous request: a script with a
    revoked token should hear so, not get a "login required" that hides why.
    """
    if hasattr(request.state, "principal"):
        return request.state.principal
    token = bearer(request)
    settings = settings_of(request)
    principal: Principal | None = None
    if token is not None:
        if token.startswith(ingest_keys.INGEST_PREFIX):
            raise ApiError(401, "an ingest key only works on the ingestion endpoints")
        if token.startswith(AGENT_PREFIX):
            raise ApiError(403, "an agent token only works on the agent endpoints")
        principal = await run_in_store(
            request, lambda conn, now: tokens.resolve_token(conn, token, now)
        )
        if principal is None:
            raise ApiError(401, "unknown or revoked API token")
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            principal = await run_in_store(
                request, lambda conn, now: sessions.resolve_session(conn, cookie, now, settings)
            )
    if principal is not None:
        remember_verified(request, principal)
    request.state.principal = principal
    return principal


async def current_principal(request: Request) -> Principal:
    principal = await optional_principal(request)
    if principal is None:
        raise ApiError(401, LOGIN_REQUIRED)
    return principal


def principal_of(request: Request) -> Principal | None:
    """The principal an earlier dependency resolved (for handlers naming the actor)."""
    return getattr(request.state, "principal", None)


def actor(request: Request) -> str:
    """Who to record as having done it: always the authenticated principal (the username, or
    `token:NAME`), never a name the request body offers."""
    principal = principal_of(request)
    return principal.name if principal is not None else "anonymous"


# for the `actor`/`created_by` fields older clients still send: accepted so they keep working,
# and ignored, since a responder's token must not record its acks as someone else's
IGNORED_ACTOR = (
    "Ignored: the actor recorded is the authenticated principal (the user, or token:NAME). "
    "Still accepted so that older clients keep working."
)


# -- while the store is down -----------------------------------------------------------------

# how long a credential this process verified still counts, for reading /healthz's details
# only, while the store that would check it again is down: an outage is when those details
# are wanted most, and they change nothing
VERIFIED_GRACE = 24 * 3600.0
VERIFIED_PRUNE_AT = 1000  # entries before old ones are dropped


def _credential(request: Request) -> str | None:
    token = bearer(request)
    if token is not None:
        return "bearer:" + passwords.secret_hash(token)
    cookie = request.cookies.get(SESSION_COOKIE)
    return "session:" + passwords.secret_hash(cookie) if cookie else None


def _verified(request: Request) -> dict[str, tuple[Principal, float]]:
    state = request.app.state
    verified = getattr(state, "verified_principals", None)
    if verified is None:
        verified = state.verified_principals = {}
    return verified


def remember_verified(request: Request, principal: Principal) -> None:
    key = _credential(request)
    if key is None:
        return
    now = runtime_of(request).clock.now()
    verified = _verified(request)
    if len(verified) >= VERIFIED_PRUNE_AT:
        for old in [k for k, (_, at) in verified.items() if now - at > VERIFIED_GRACE]:
            del verified[old]
    verified[key] = (principal, now)


def recently_verified(request: Request) -> Principal | None:
    """The principal of this request's credentials as last verified with the store, if that
    was within VERIFIED_GRACE; for when the store cannot be asked."""
    key = _credential(request)
    known = _verified(request).get(key) if key is not None else None
    if known is None or runtime_of(request).clock.now() - known[1] > VERIFIED_GRACE:
        return None
    return known[0]


# -- may they --------------------------------------------------------------------------------


async def check_csrf(request: Request, principal: Principal) -> None:
    """Refuse a changing request of a cookie session that does not carry its CSRF token."""
    if request.method in SAFE_METHODS or principal.kind != "user":
        return
    expected = principal.csrf_token or ""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and _is_form(request):
        # FastAPI/Starlette keep the body, so the endpoint can still read it afterwards
        fields = parse_qs((await request.body()).decode("utf-8", "replace"))
        given = fields.get(CSRF_FIELD)
        sent = given[0] if given else None
    if not sent or not expected or not _same_secret(sent, expected):
        request.state.refusal = "csrf"  # the security log tells it from other refusals
        raise ApiError(
            403,
            f"missing or wrong CSRF token: send the {CSRF_HEADER} header or the "
            f"{CSRF_FIELD} form field of this session",
            CSRF_FIELD,
        )


def _is_form(request: Request) -> bool:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return ctype == "application/x-www-form-urlencoded"


def _refuse_role(principal: Principal, need: str) -> ApiError:
    return ApiError(
        403, f"this needs the {need} role; {principal.name} has the {principal.role} role"
    )


async def authorize(request: Request, need: str) -> Principal:
    principal = await current_principal(request)
    if not principal.allows(need):
        raise _refuse_role(principal, need)
    await check_csrf(request, principal)
    return principal


def require(role: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: a principal with at least `role` (viewer < responder < admin), or for
    `metrics` (only /metrics needs it) a metrics token or any user role."""

    async def dependency(request: Request) -> Principal:
        return await authorize(request, role)

    dependency.__name__ = f"require_{role}"
    return dependency


async def access(request: Request) -> Principal:
    """Router-level rule: reading needs a viewer, changing anything a responder."""
    return await authorize(request, "viewer" if request.method in SAFE_METHODS else "responder")


# -- ingestion -------------------------------------------------------------------------------


INGEST_KEY_GRACE = 24 * 3600.0


def _ingest_cache(request: Request) -> dict[str, tuple[dict[str, Any], float]]:
    state = request.app.state
    cache = getattr(state, "ingest_key_cache", None)
    if cache is None:
        cache = state.ingest_key_cache = {}
    return cache


def ingest_key(scope: str) -> Callable[..., Awaitable[dict[str, Any]]]:
    """A dependency for ingestion endpoints: a valid, unrevoked ingest key allowed `scope`.

    The key comes as `Authorization: Bearer <key>` (Alertmanager: http_config.authorization)
    or as `?key=` for senders that can only set a URL. Returns {id, name, scope}.
    """

    async def dependency(
        request: Request,
        key: str | None = Query(
            None, description="The ingest key, when the sender cannot set an Authorization header."
        ),
    ) -> dict[str, Any]:
        given = bearer(request) or key
        cache = _ingest_cache(request)
        digest = passwords.secret_hash(given) if given else ""
        try:
            row = await run_in_store(
                request, lambda conn, now: ingest_keys.resolve_ingest_key(conn, given, scope, now)
            )
        except AuthError as exc:
            # counted and logged: a sender with a wrong key would otherwise go unnoticed
            reason = "wrong_scope" if exc.kind == "forbidden" else "unknown_key"
            refuse(request, scope, reason if given else "no_key", given)
            raise
        except StoreError:
            # the store is down, which is when the spool must take what arrives: a key this
            # process verified recently is still good enough to accept (revocation waits for
            # the store, for at most INGEST_KEY_GRACE)
            known = cache.get(digest)
            now = runtime_of(request).clock.now()
            if known is None or now - known[1] > INGEST_KEY_GRACE:
                raise
            row = known[0]
            if row["scope"] not in (scope, "all"):
                refuse(request, scope, "wrong_scope", given)
                raise ApiError(
                    403, f"ingest key '{row['name']}' may send {row['scope']}, not {scope}", "key"
                ) from None
        else:
            cache[digest] = (row, runtime_of(request).clock.now())
        request.state.ingest_key = row
        return row

    dependency.__name__ = f"ingest_key_{scope}"
    return dependency


# -- for pages -------------------------------------------------------------------------------


def wants_html(request: Request) -> bool:
    """A browser navigating to a page (not a script, not the API): redirect it to /login."""
    if request.url.path.startswith("/api/"):
        return False
    if request.method in ("GET", "HEAD"):
        return "text/html" in request.headers.get("accept", "")
    # a page's form posted after the session expired: back to the login page, not bare JSON
    return request.method == "POST" and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    )


def safe_next(value: str | None) -> str:
    """A local path to return to after login; anything else (another site) becomes '/'."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method not in ("GET", "HEAD"):
        # after logging in again, go back to the page the form was on, not to its POST target
        referer = urlsplit(request.headers.get("referer", ""))
        same_site = not referer.netloc or referer.netloc == request.url.netloc
        target = referer.path if same_site and referer.path.startswith("/") else "/"
    return RedirectResponse(f"/login?next={quote(safe_next(target), safe='/')}", status_code=303)


# -- login CSRF ------------------------------------------------------------------------------


def _host(netloc: str) -> str:
    # http://x and https://x:443 are one site to us: TLS often ends at a proxy, so the scheme
    # the server sees need not be the one the browser used
    value = netloc.strip().lower()
    for port in (":80", ":443"):
        if value.endswith(port):
            return value[: -len(port)]
    return value


def own_hosts(request: Request) -> set[str]:
    """The host names this server answers to: the Host header, a proxy's X-Forwarded-Host, and
    the configured public URLs (a proxy may rewrite Host to 127.0.0.1:8080).

    A page on another site cannot set any of these headers on the browser's request, so
    trusting them here cannot help a forged login through."""
    hosts = {_host(request.headers.get("host", ""))}
    hosts.update(_host(h) for h in request.headers.get("x-forwarded-host", "").split(",") if h)
    settings = runtime_of(request).settings
    for section in ("incidents", "errors"):
        url = getattr(getattr(settings, section, None), "public_url", None)
        if url:  # a str, or pydantic's HttpUrl
            hosts.add(_host(urlsplit(str(url)).netloc))
    hosts.discard("")
    return hosts


def request_site(request: Request) -> bool | None:
    """Whether the browser says this request came from one of our own pages.

    True or False from `Origin`, else from `Referer` (our pages send it: Referrer-Policy
    same-origin); None when the request names no origin at all, as scripts and curl do.
    `Origin: null` (sandboxed frames, no-referrer pages) is another site.
    """
    source = request.headers.get("origin") or request.headers.get("referer")
    if source is None:
        return None
    parts = urlsplit(source.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return _host(parts.netloc) in own_hosts(request)


def login_form_token(request: Request) -> str:
    """The login page's pre-session token: the browser's `nw_login` cookie, or a new one."""
    value = request.cookies.get(LOGIN_COOKIE, "")
    if _TOKEN_SHAPE.fullmatch(value):
        return value  # keep it: a second tab's login form stays valid
    return secrets.token_urlsafe(32)


def login_form_ok(request: Request, sent: str | None) -> bool:
    expected = request.cookies.get(LOGIN_COOKIE)
    return bool(sent and expected and _same_secret(sent, expected))


def _same_secret(sent: str, expected: str) -> bool:
    # as bytes: compare_digest refuses str with non-ASCII characters (a TypeError, so a 500)
    return secrets.compare_digest(sent.encode("utf-8"), expected.encode("utf-8"))


def set_login_cookie(response: Response, request: Request, value: str) -> None:
    # Strict and only for /login: another site's form never carries it, and nothing else needs it
    response.set_cookie(
        LOGIN_COOKIE,
        value,
        path="/login",
        httponly=True,
        samesite="strict",
        secure=cookie_secure(request),
    )


def clear_login_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        LOGIN_COOKIE, path="/login", httponly=True, samesite="strict", secure=cookie_secure(request)
    )


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(settings_of(request).session_max),
        path="/",
        httponly=True,
        samesite="lax",
        secure=cookie_secure(request),
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=cookie_secure(request)
    )


# -- auditing the other routers' changes -----------------------------------------------------

# these routes audit themselves, with more detail than a method and a path
SELF_AUDITED = (
    "/login",
    "/logout",
    "/api/v1/users",
    "/api/v1/sessions",
    "/api/v1/tokens",
    "/api/v1/ingest-keys",
    "/api/v1/projects",
    "/api/v1/errors/issues",
    "/api/v1/security/blocks",
    "/api/v1/security/lockdown",
)


async def audit_change(scope: dict[str, Any], status: int) -> None:
    """One audit entry per successful change made by a principal (a web.status hook).

    A change is any method but GET/HEAD/OPTIONS answered below 400 on a route that resolved a
    principal (`access`/`require`); entries read `api.POST /api/v1/incidents/3/ack` with the
    status. Ingestion (keys, not principals) and refused requests are not audited here: refused
    logins are audited by the login itself, and refused changes changed nothing.
    """
    method = scope.get("method", "GET")
    path = scope.get("path", "")
    if method in SAFE_METHODS or path.startswith(SELF_AUDITED):
        return
    principal = (scope.get("state") or {}).get("principal")
    if principal is None or status >= 400:
        return
    client = scope.get("client")
    ip = client[0] if client else None
    runtime = state_of(scope["app"]).runtime

    def write() -> None:
        now = runtime.clock.now()
        with runtime.store.begin() as conn:
            auth_audit.audit(
                conn, principal.name, f"api.{method}", path, {"status": status}, ip, now
            )

    try:
        await asyncio.to_thread(write)
    except StoreError as exc:  # the change itself is done and answered; say what is missing
        log.warning(
            "audit entry for %s %s by %s not written: %s", method, path, principal.name, exc
        )
