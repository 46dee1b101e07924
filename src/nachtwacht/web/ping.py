"""The ping URLs a job calls: `/ping/<token>`, `/ping/<token>/start`, `/ping/<token>/fail`.

GET, POST and HEAD all count (a cron line `curl -fsS -m 10 --retry 5 https://…/ping/<token>` is
the usual caller); a POST body (e.g. the job's output) is kept, trimmed to 10 kB. The answer is
`200 OK` as text once the ping is durable: committed to the store in its own transaction, or,
while the store is unavailable (or earlier pings still wait in the spool), appended to the
durable spool, from which the drainer stores it later with the same `record_ping`. So a job
that got a 200 never loses its ping to a crash or an outage. Only when the spool refuses too
(full, unwritable) is the answer 503 with `Retry-After`, and `curl --retry` sends it again.

What the router needs from the app (its `web.state.AppState`, set in the lifespan):

- `runtime.store`: the `Store` pings are written to;
- `runtime.clock`: the `Clock` stamping each ping;
- `runtime.drainer` and `runtime.spool_put` take pings the store cannot (without a drainer, a
  runtime stand-in in a test, a ping the store refuses is answered 503);
- `heartbeat_tokens`: the tokens of the configured `heartbeat` probes. A ping for any other
  token is answered 404 and not stored, so a typo in a cron line shows up at once in the job's
  own log instead of as a silent heartbeat going late.

Errors are JSON `{"detail": ..., "field": "token"}`: 400 for a token that cannot be one (not
8-128 characters of A-Z a-z 0-9 _ -), 404 for a well-formed token no probe uses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from nachtwacht.probes.heartbeats import MAX_BODY_BYTES, Event, record_ping, valid_token
from nachtwacht.probes.spooled import HEARTBEAT, heartbeat_record
from nachtwacht.spool.ingest import accept
from nachtwacht.spool.log import SpoolError, retry_after
from nachtwacht.store.db import StoreError
from nachtwacht.web.refused import refuse
from nachtwacht.web.state import app_state

router = APIRouter(tags=["heartbeat"])

_METHODS = ("GET", "POST", "HEAD")
_PATHS: tuple[tuple[str, Event], ...] = (
    ("/ping/{token}", "success"),
    ("/ping/{token}/start", "start"),
    ("/ping/{token}/fail", "fail"),
)
_SUMMARY = {
    "success": "Report that a job succeeded",
    "start": "Report that a job started",
    "fail": "Report that a job failed",
}


async def ping(request: Request, token: str, event: Event) -> Response:
    if not valid_token(token):
        refuse(request, "ping", "malformed", token)
        return _error(400, "a heartbeat token is 8-128 characters of A-Z a-z 0-9 _ -")
    state = app_state(request)
    if token not in state.heartbeat_tokens:
        # counted and logged too: the job's own log may be read by nobody
        refuse(request, "ping", "unknown_key", token)
        return _error(404, "no heartbeat probe has this token")
    ts = state.clock.now()
    body = await _read_body(request) if request.method == "POST" else None
    remote = request.client.host if request.client else None
    try:
        await accept(
            state.runtime,
            HEARTBEAT,
            lambda conn: record_ping(conn, token, event, ts, body, remote),
            lambda maybe: heartbeat_record(token, event, ts, body, remote, maybe),
        )
    except (StoreError, SpoolError) as exc:
        return JSONResponse(
            {"detail": f"the ping was not recorded, try again: {exc}", "field": None},
            status_code=503,
            headers={"Retry-After": str(retry_after(exc))},
        )
    return PlainTextResponse("OK")


async def _read_body(request: Request) -> bytes:
    """At most MAX_BODY_BYTES, without holding a huge upload in memory."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_BODY_BYTES:
            break
    return b"".join(chunks)[:MAX_BODY_BYTES]


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail, "field": "token"}, status_code=status)


def _endpoint(event: Event) -> Callable[[Request, str], Awaitable[Response]]:
    async def endpoint(request: Request, token: str) -> Response:
        return await ping(request, token, event)

    return endpoint


# One route per method: a multi-method route shares one OpenAPI operation id across its
# methods, which FastAPI reports as duplicates.
for _path, _event in _PATHS:
    for _method in _METHODS:
        router.add_api_route(
            _path,
            _endpoint(_event),
            methods=[_method],
            name=f"ping_{_event}_{_method.lower()}",
            summary=_SUMMARY[_event],
            response_class=PlainTextResponse,
            responses={
                400: {"description": "malformed token"},
                404: {"description": "unknown token"},
            },
        )
