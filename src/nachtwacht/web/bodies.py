"""The door for request bodies: credentials before the body, a size cap per route, JSON depth.

FastAPI reads a route's body before it runs the route's dependencies, so `access` and the
ingest keys refuse a request only after its whole body is in memory: six anonymous 250 MB
bodies took the server from 156 MB to 3.4 GB. This pure ASGI middleware stands in front of
every route and, for a request that carries a body (any method but GET, HEAD, OPTIONS):

1. refuses it with 401 (a browser's form: the login page) before reading a byte when the
   route needs a login or an ingest key and the request carries neither; whether a credential
   that is there is valid is still for the route to say, after at most the cap was read;
2. refuses it with 413 when the body is larger than the route's cap: at once when
   Content-Length says so, else (chunked) as soon as the bytes counted pass the cap. The rest
   is never read, and the answer says `Connection: close`, so the server drops the connection
   and the client stops sending;
3. refuses it with 422 when it is JSON nested deeper than the route allows, before any parser
   sees it (`json` and pydantic recurse, and a deep text broke them with a 500);
4. else hands the route the body it read (at most the cap in memory).

Sentry's envelope and store endpoints keep their own caps (`errors.max_envelope_bytes`,
counted while reading and inflating; depth checked per event) and heartbeat pings keep the
first 10 kB of what they are sent without ever refusing a ping for it: both stream past here.
The caps per route are in `rules`; docs/security.md ("Limits") lists them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nachtwacht.auth.deps import LOGIN_REQUIRED, SESSION_COOKIE, login_redirect, wants_html
from nachtwacht.auth.ingest_keys import NO_INGEST_KEY
from nachtwacht.config import limits
from nachtwacht.config.schema import Settings
from nachtwacht.web import refused

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
JSON_TYPES = re.compile(r"^application/(json|[^;\s]+\+json)$")

Credential = Literal["none", "login", "ingest"]

# streamed past this door: they read (and cap) their bodies themselves
_OWN_READERS = (re.compile(r"^/api/[^/]+/(envelope|store)/?$"), re.compile(r"^/ping/"))
_PUBLIC = (re.compile(r"^/log(in|out)$"), re.compile(r"^/ack/"), re.compile(r"^/verify/"))
_DOCUMENTS = re.compile(r"^(/api/v1)?/incidents/\d+/(postmortem|messages)$")


@dataclass(frozen=True)
class Rule:
    cap: int  # bytes
    depth: int  # JSON nesting
    credential: Credential


def rules(settings: Settings) -> dict[str, Rule]:
    server, errors = settings.server, settings.errors
    body, depth = server.max_body_bytes, server.max_json_depth
    return {
        "default": Rule(body, depth, "login"),
        "public": Rule(body, depth, "none"),
        # the public status page's forms: an e-mail address, or an empty confirm button
        "status_page": Rule(4 * limits.KIB, 4, "none"),
        # a review's four sections, an edited notification: text a person wrote, but long
        "document": Rule(server.max_document_bytes, depth, "login"),
        "alerts": Rule(body, depth, "ingest"),
        "alertmanager": Rule(server.max_webhook_bytes, depth, "ingest"),
        # one error event, as Sentry's endpoints take it
        "error_event": Rule(errors.max_event_bytes, errors.max_event_depth, "ingest"),
    }


def rule_name(path: str) -> str | None:
    """Which rule a request to `path` is held to; None: the route reads its body itself."""
    if any(p.match(path) for p in _OWN_READERS):
        return None
    if path == "/api/v1/alerts":
        return "alerts"
    if path == "/api/v1/alerts/alertmanager":
        return "alertmanager"
    if path == "/api/v1/errors/events":
        return "error_event"
    if any(p.match(path) for p in _PUBLIC):
        return "public"
    if _DOCUMENTS.match(path):
        return "document"
    return "default"


class BodyLimits:
    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.rules = rules(settings)
        page = settings.status_page
        # anonymous by design (statuspage/pages.py); its path is configured, so not in _PUBLIC
        self.status_page = page.path + "/" if page.enabled else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if self.status_page is not None and path.startswith(self.status_page):
            name: str | None = "status_page"
        else:
            name = rule_name(path)
        if name is None:  # the route caps its body itself
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])  # ASGI header names are lower case
        declared = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if not (chunked or (declared and declared.strip() != b"0")):
            # no body: nothing to hold, and the route refuses as it always did
            await self.app(scope, receive, send)
            return
        rule = self.rules[name]
        refusal = _anonymous(scope, headers, rule.credential)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if declared is not None and declared.strip().isdigit() and int(declared) > rule.cap:
            await _too_large(rule.cap)(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > rule.cap:
                await _too_large(rule.cap)(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower().decode("latin-1")
        # no Content-Type: /login reads such a body as JSON
        if (not ctype or JSON_TYPES.match(ctype)) and limits.too_deep(body, rule.depth):
            answer = JSONResponse(
                {"detail": f"the JSON is nested deeper than {rule.depth} levels", "field": "body"},
                status_code=422,
            )
            await answer(scope, receive, send)
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)


def _anonymous(
    scope: dict[str, Any], headers: dict[bytes, bytes], credential: Credential
) -> Response | None:
    """The answer for a request that carries no credential the route could accept, or None."""
    if credential == "none" or b"authorization" in headers:
        return None
    request = Request(scope)
    if credential == "ingest":
        if request.query_params.get("key"):
            return None
        # refused here, before the route would have counted it: count it the same way
        door = "errors" if request.url.path.startswith("/api/v1/errors") else "alerts"
        refused.refuse(request, door, "no_key", None)
        return _close(JSONResponse({"detail": NO_INGEST_KEY, "field": None}, status_code=401))
    if request.cookies.get(SESSION_COOKIE):
        return None
    # as the app's handler for a 401 does: a browser's form post goes to the login page
    if wants_html(request):
        return _close(login_redirect(request))
    return _close(JSONResponse({"detail": LOGIN_REQUIRED, "field": None}, status_code=401))


def _too_large(cap: int) -> Response:
    return _close(
        JSONResponse(
            {"detail": f"the body is larger than {cap} bytes", "field": None}, status_code=413
        )
    )


def _close(response: Response) -> Response:
    # the body is left unread: the server must drop the connection rather than read on
    response.headers["connection"] = "close"
    return response
