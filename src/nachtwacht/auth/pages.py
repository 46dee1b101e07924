"""The login form (public; the login itself is POST /login in auth/api.py)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from nachtwacht.auth.deps import (
    LOGIN_FIELD,
    login_form_token,
    optional_principal,
    safe_next,
    set_login_cookie,
)
from nachtwacht.web.render import HEADERS, _redirect, env
from nachtwacht.web.state import runtime_of

router = APIRouter(include_in_schema=False)


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
    rt = runtime_of(request)
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
