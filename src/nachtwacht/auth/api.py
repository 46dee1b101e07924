"""Login, logout, users, sessions, API tokens, ingest keys and the audit log (thin router).

Every change and every login attempt is audited by the service functions, with the client's
address. Admin-only routes use `require("admin")`; a user may also see and end their own
sessions and change their own password (with the current one).

Why one module of some 540 lines: the import contract (tests/import_contract.py) gives a domain one
`api` door, and these routes are each a few lines over the auth services (users.py,
sessions.py, tokens.py, ingest_keys.py, audit.py), grouped below in that order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy import Connection

from nachtwacht.auth import audit as auth_audit
from nachtwacht.auth import ingest_keys, logins, sessions, tokens, users
from nachtwacht.auth.deps import (
    LOGIN_FIELD,
    SESSION_COOKIE,
    check_csrf,
    clear_login_cookie,
    clear_session_cookie,
    client_ip,
    login_form_ok,
    optional_principal,
    request_site,
    require,
    run_in_store,
    safe_next,
    set_session_cookie,
    settings_of,
)
from nachtwacht.auth.models import (
    IngestKeyIn,
    LoginIn,
    PasswordIn,
    Principal,
    TokenIn,
    UserIn,
)
from nachtwacht.clock import iso
from nachtwacht.web.errors import ApiError
from nachtwacht.web.pagination import Page, page, pager, set_headers

router = APIRouter(tags=["auth"])

signed_in = require("viewer")
# ids are 32-bit on every backend; a bigger number is a 422, not a driver overflow
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
admin = require("admin")

_LOGIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": LoginIn.model_json_schema()},
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {
                        "username": {"type": "string"},
                        "password": {"type": "string"},
                        "next": {"type": "string", "description": "where to go after login"},
                        LOGIN_FIELD: {
                            "type": "string",
                            "description": "the login page's token (equal to its nw_login cookie)",
                        },
                    },
                }
            },
        },
    }
}


def _user_agent(request: Request) -> str | None:
    return request.headers.get("user-agent")


@dataclass
class _LoginForm:
    body: LoginIn
    is_form: bool
    next: str = ""
    form_token: str | None = None


async def _read_login(request: Request) -> _LoginForm:
    """The credentials, whether they came from an HTML form, its `next` and its login token."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    token = None
    if ctype == "application/x-www-form-urlencoded":
        fields = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        data: Any = {k: fields.get(k, "") for k in ("username", "password")}
        is_form, nxt, token = True, fields.get("next", ""), fields.get(LOGIN_FIELD)
    elif ctype in ("application/json", ""):
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            raise ApiError(422, "the body is not valid JSON") from None
        is_form, nxt = False, ""
    else:
        raise ApiError(
            415, "send the login as application/json or application/x-www-form-urlencoded"
        )
    try:
        return _LoginForm(LoginIn.model_validate(data), is_form, nxt, token)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise ApiError(422, first["msg"], field) from None


@router.post(
    "/login",
    openapi_extra=_LOGIN_BODY,
    responses={
        401: {"description": "wrong username or password"},
        403: {"description": "a login from another site's page (login CSRF)"},
        429: {"description": "too many failures: account locked or address throttled"},
    },
)
async def login(request: Request) -> Response:
    """Log in with username and password: sets the `nw_session` cookie.

    Returns {user, role, csrf_token, expires_at}; the CSRF token goes in the `X-CSRF-Token`
    header (or a `csrf_token` form field) of every later request that changes something. An
    HTML form post (Accept: text/html) is answered with a redirect instead: to `next` on
    success, to `/login?error=wrong|locked|throttled|expired&next=...` on failure.

    Login CSRF (another site's form logging the browser into the attacker's account): a
    request whose Origin or Referer names another site is refused, and a form post must carry
    the login page's `login_csrf` field equal to its `nw_login` cookie. JSON without Origin or
    Referer (scripts, curl) needs neither.
    """
    if request_site(request) is False:
        raise ApiError(403, "a login must come from this site's own login page", "origin")
    form = await _read_login(request)
    body, is_form, nxt = form.body, form.is_form, form.next
    html = is_form and "text/html" in request.headers.get("accept", "")
    if is_form and not login_form_ok(request, form.form_token):
        if html:
            # a login page from before the cookie, or opened in another browser: a fresh one
            query = urlencode({"error": "expired", "next": safe_next(nxt)})
            return RedirectResponse(f"/login?{query}", status_code=303)
        request.state.refusal = "csrf"
        raise ApiError(
            403,
            f"a login form must carry the {LOGIN_FIELD} field of the login page "
            "(equal to its nw_login cookie); scripts log in with JSON",
            LOGIN_FIELD,
        )
    settings = settings_of(request)
    ip = client_ip(request)
    previous = request.cookies.get(SESSION_COOKIE)

    def work(conn: Connection, now: float) -> logins.LoginOutcome:
        return logins.login(
            conn,
            body.username,
            body.password,
            now,
            ip=ip,
            user_agent=_user_agent(request),
            settings=settings,
            replaces=previous,
        )

    outcome = await run_in_store(request, work)
    if not outcome.ok:
        headers = {}
        if outcome.retry_after is not None and outcome.status_code == 429:
            headers["Retry-After"] = str(int(outcome.retry_after + 0.999))
        if html:
            # a code the login page turns into words, never free text from the URL
            query = urlencode({"error": outcome.reason, "next": safe_next(nxt)})
            return RedirectResponse(f"/login?{query}", status_code=303, headers=headers)
        return JSONResponse(
            {"detail": outcome.message, "field": None},
            status_code=outcome.status_code,
            headers=headers,
        )
    response: Response
    if html:
        response = RedirectResponse(safe_next(nxt), status_code=303)
    else:
        response = JSONResponse(
            {
                "user": outcome.username,
                "role": outcome.role,
                "csrf_token": outcome.csrf_token,
                "expires_at": iso(outcome.expires_at),
            }
        )
    set_session_cookie(response, request, outcome.token or "")
    if is_form:
        clear_login_cookie(response, request)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End this browser's session and clear its cookie (needs the CSRF token when logged in)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    principal = await optional_principal(request)
    ended = False
    if principal is not None and principal.kind == "user" and cookie:
        # a forged logout is a nuisance, but "CSRF on every form" has no exceptions
        await check_csrf(request, principal)
        ip = client_ip(request)
        ended = await run_in_store(
            request, lambda conn, now: sessions.end_session(conn, cookie, now, ip=ip)
        )
    response: Response
    if "text/html" in request.headers.get("accept", ""):
        response = RedirectResponse("/login", status_code=303)
    else:
        response = JSONResponse({"logged_out": ended})
    clear_session_cookie(response, request)
    return response


@router.get("/api/v1/me")
async def me(principal: Principal = Depends(signed_in)) -> dict[str, Any]:
    """Who this request is: kind (user|token), name, role, session id and CSRF token."""
    return principal.as_dict()


# ---------------------------------------------------------------------------- users


@router.get("/api/v1/users", dependencies=[Depends(admin)])
async def list_users(
    request: Request, response: Response, pg: Page = Depends(page)
) -> list[dict[str, Any]]:
    def work(conn: Connection, now: float) -> list[dict[str, Any]]:
        set_headers(request, response, pg, users.count_users(conn))
        return users.list_users(conn, now, pg.limit, pg.offset)

    return await run_in_store(request, work)


@router.post("/api/v1/users", status_code=201)
async def add_user(
    request: Request, body: UserIn, principal: Principal = Depends(admin)
) -> dict[str, Any]:
    settings, ip = settings_of(request), client_ip(request)
    return await run_in_store(
        request,
        lambda conn, now: users.add_user(
            conn,
            body.username,
            body.password,
            body.role,
            now,
            actor=principal.name,
            ip=ip,
            settings=settings,
        ),
    )


def _is_self(principal: Principal, name: str) -> bool:
    return principal.kind == "user" and principal.name == name.strip().lower()


@router.get("/api/v1/users/{name}")
async def get_user(
    request: Request, name: str, principal: Principal = Depends(signed_in)
) -> dict[str, Any]:
    """One user (admins: anyone; others: themselves)."""
    if not (principal.allows("admin") or _is_self(principal, name)):
        raise ApiError(403, f"this needs the admin role; {principal.name} may only see itself")
    return await run_in_store(request, lambda conn, now: users.get_user(conn, name, now))


@router.post("/api/v1/users/{name}/password")
async def set_password(
    request: Request, name: str, body: PasswordIn, principal: Principal = Depends(signed_in)
) -> dict[str, Any]:
    """Set a password. Admins set anyone's; users set their own with `current_password`.

    Ends the user's other sessions (all of them when an admin sets someone else's).
    """
    is_self = _is_self(principal, name)
    if not (is_self or principal.allows("admin")):
        raise ApiError(403, "this needs the admin role, or must be your own password")
    settings, ip = settings_of(request), client_ip(request)
    if is_self:
        # your own, even as an admin: with the current password, guesses counted and audited
        outcome = await run_in_store(
            request,
            lambda conn, now: logins.change_own_password(
                conn,
                name,
                body.current_password or "",
                body.password,
                now,
                ip=ip,
                settings=settings,
                keep_session=principal.session_id,
            ),
        )
        if not outcome.ok:
            headers = None
            if outcome.retry_after is not None:
                headers = {"Retry-After": str(int(outcome.retry_after + 0.999))}
            raise ApiError(outcome.status_code, outcome.message, outcome.field, headers=headers)
        ended = outcome.sessions_revoked
    else:
        ended = await run_in_store(
            request,
            lambda conn, now: users.set_password(
                conn, name, body.password, now, actor=principal.name, ip=ip, settings=settings
            ),
        )
    return {"user": name.strip().lower(), "password_changed": True, "sessions_revoked": ended}


@router.post("/api/v1/users/{name}/disable")
async def disable_user(
    request: Request, name: str, principal: Principal = Depends(admin)
) -> dict[str, Any]:
    """Disable a user: they cannot log in, and their sessions end at once."""
    ip = client_ip(request)
    return await run_in_store(
        request,
        lambda conn, now: users.set_disabled(conn, name, True, now, actor=principal.name, ip=ip),
    )


@router.post("/api/v1/users/{name}/enable")
async def enable_user(
    request: Request, name: str, principal: Principal = Depends(admin)
) -> dict[str, Any]:
    """Enable a user again; also lifts a lockout after wrong passwords."""
    ip = client_ip(request)
    return await run_in_store(
        request,
        lambda conn, now: users.set_disabled(conn, name, False, now, actor=principal.name, ip=ip),
    )


# ---------------------------------------------------------------------------- sessions


@router.get("/api/v1/sessions")
async def list_sessions(
    request: Request,
    user: str | None = Query(None, description="Admins: only this user's sessions."),
    all: bool = Query(False, description="Admins: every user's sessions."),
    ended: bool = Query(False, description="Include revoked and expired sessions."),
    principal: Principal = Depends(signed_in),
) -> list[dict[str, Any]]:
    """Active sessions: your own; admins may ask for ?user=NAME or ?all=true."""
    if user is not None or all:
        if not principal.allows("admin"):
            raise ApiError(403, "this needs the admin role; without it you see your own sessions")
        who = user
    elif principal.kind == "user":
        who = principal.name
    else:
        return []  # an API token has no sessions of its own

    def work(conn: Connection, now: float) -> list[dict[str, Any]]:
        rows = sessions.list_sessions(conn, now, who, include_ended=ended)
        for row in rows:
            row["current"] = row["id"] == principal.session_id
        return rows

    return await run_in_store(request, work)


@router.delete("/api/v1/sessions/{session_id}")
async def revoke_session(
    request: Request, session_id: RowId, principal: Principal = Depends(signed_in)
) -> dict[str, Any]:
    """End one session: your own, or (admins) anyone's."""
    owner = None if principal.allows("admin") else principal.name
    ip = client_ip(request)
    return await run_in_store(
        request,
        lambda conn, now: sessions.revoke_session(
            conn, session_id, now, actor=principal.name, ip=ip, owner=owner
        ),
    )


@router.post("/api/v1/users/{name}/sessions/revoke-all")
async def revoke_all_sessions(
    request: Request, name: str, principal: Principal = Depends(signed_in)
) -> dict[str, Any]:
    """End every session of a user (yours: every one but this one)."""
    is_self = _is_self(principal, name)
    if not (is_self or principal.allows("admin")):
        raise ApiError(403, "this needs the admin role, or must be your own sessions")
    ip = client_ip(request)
    keep = principal.session_id if is_self else None
    ended = await run_in_store(
        request,
        lambda conn, now: sessions.revoke_all_sessions(
            conn, name, now, actor=principal.name, ip=ip, keep_session=keep
        ),
    )
    return {"user": name.strip().lower(), "sessions_revoked": ended}


# ---------------------------------------------------------------------------- API tokens


@router.get("/api/v1/tokens", dependencies=[Depends(admin)])
async def list_tokens(
    request: Request,
    response: Response,
    revoked: bool = Query(False, description="Include revoked tokens."),
    pg: Page = Depends(page),
) -> list[dict[str, Any]]:
    """API tokens without their secrets."""

    def work(conn: Connection, _now: float) -> list[dict[str, Any]]:
        set_headers(request, response, pg, tokens.count_tokens(conn, include_revoked=revoked))
        return tokens.list_tokens(conn, include_revoked=revoked, limit=pg.limit, offset=pg.offset)

    return await run_in_store(request, work)


@router.post("/api/v1/tokens", status_code=201)
async def create_token(
    request: Request, body: TokenIn, principal: Principal = Depends(admin)
) -> dict[str, Any]:
    """A new API token with a role; `token` in the answer is shown this once only.

    The token acts for the admin who makes it (a token made with a token: for that token's
    owner): it stops working when that user is disabled or removed, and never has more than
    that user's current role.
    """
    ip = client_ip(request)
    return await run_in_store(
        request,
        lambda conn, now: tokens.create_token(
            conn, body.name, body.role, now, actor=principal.name, ip=ip, owner=principal.user_id
        ),
    )


@router.delete("/api/v1/tokens/{token_id}")
async def revoke_token(
    request: Request, token_id: RowId, principal: Principal = Depends(admin)
) -> dict[str, Any]:
    ip = client_ip(request)
    return await run_in_store(
        request,
        lambda conn, now: tokens.revoke_token(conn, token_id, now, actor=principal.name, ip=ip),
    )


# ---------------------------------------------------------------------------- ingest keys


@router.get("/api/v1/ingest-keys", dependencies=[Depends(admin)])
async def list_ingest_keys(
    request: Request, revoked: bool = Query(False, description="Include revoked keys.")
) -> list[dict[str, Any]]:
    """Ingest keys without their secrets."""
    return await run_in_store(
        request, lambda conn, _now: ingest_keys.list_ingest_keys(conn, include_revoked=revoked)
    )


@router.post("/api/v1/ingest-keys", status_code=201)
async def create_ingest_key(
    request: Request, body: IngestKeyIn, principal: Principal = Depends(admin)
) -> dict[str, Any]:
    """A new key for one source (alerts, errors or all); `key` is shown this once only."""
    ip = client_ip(request)
    return await run_in_store(
        request,
        lambda conn, now: ingest_keys.create_ingest_key(
            conn, body.name, body.scope, now, actor=principal.name, ip=ip
        ),
    )


@router.delete("/api/v1/ingest-keys/{key_id}")
async def revoke_ingest_key(
    request: Request, key_id: RowId, principal: Principal = Depends(admin)
) -> dict[str, Any]:
    ip = client_ip(request)
    return await run_in_store(
        request,
        lambda conn, now: ingest_keys.revoke_ingest_key(
            conn, key_id, now, actor=principal.name, ip=ip
        ),
    )


# ---------------------------------------------------------------------------- audit log


@router.get("/api/v1/audit", dependencies=[Depends(admin)], response_model=None)
async def audit(
    request: Request,
    response: Response,
    since: str | None = Query(None, description="Epoch seconds or ISO 8601."),
    action: str | None = Query(None, description="e.g. login.failed, or login. for all logins"),
    format: Literal["json", "jsonl", "csv"] = Query("json"),
    # exports take bigger pages than other lists (up to 100,000 rows) so one file holds a month
    pg: Page = Depends(pager(default=1000, maximum=100_000)),
) -> Any:
    """The audit log, newest first: JSON, JSON lines or CSV (as a download)."""
    start = auth_audit.parse_since(since)

    def work(conn: Connection, _now: float) -> tuple[list[dict[str, Any]], int]:
        rows = auth_audit.audit_log(conn, start, pg.limit, action=action, offset=pg.offset)
        return rows, auth_audit.count_audit(conn, start, action=action)

    rows, total = await run_in_store(request, work)
    out: Response
    if format == "json":
        set_headers(request, response, pg, total)
        return rows
    if format == "jsonl":
        out = PlainTextResponse(auth_audit.export_jsonl(rows), media_type="application/x-ndjson")
    else:
        out = PlainTextResponse(
            auth_audit.export_csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="nachtwacht-audit.csv"'},
        )
    set_headers(request, out, pg, total)
    return out
