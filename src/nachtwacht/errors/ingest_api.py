"""Ingestion routes: Sentry envelope/store endpoints and the plain JSON endpoint.

Authenticated by the project's DSN key (Sentry) or an ingest key, not by a login.

The Sentry endpoints are the hot path: plain Starlette routes (no dependency solving, no
pydantic), orjson, the project keys from memory (`projects.KeyCache`), and no store query.
An accepted event is in the spool, fsync'd, before the 200 goes out; the drainer stores it.

Status codes: 200 `{"id": event_id}`; 400 malformed or nested deeper than
`errors.max_event_depth` (JSON `detail`); 401 no or unknown key;
403 a key of another project or a disabled project; 404 no such project; 413 an event over
`errors.max_event_bytes` or a body over `errors.max_envelope_bytes` (decompressed); 415 an
unknown Content-Encoding; 429 with `Retry-After` when the drainer is behind or the spool is
full; 503 with `Retry-After` when the spool cannot be written (a full disk), or when a key not in
memory cannot be looked up because the store cannot be read.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from nachtwacht.auth.deps import bearer, ingest_key
from nachtwacht.errors import pytrace
from nachtwacht.errors.envelope import (
    IngestError,
    clean_event_id,
    decompress,
    dsn_parts,
    load_event,
    new_event_id,
    parse_auth_header,
    parse_envelope,
    too_large,
)
from nachtwacht.errors.ingest_counts import ACCEPTED, RECORD_KIND, REFUSED
from nachtwacht.errors.projects import KeyCache, key_loader
from nachtwacht.errors.records import build, event_meta
from nachtwacht.spool.log import SpoolError, SpoolFull, retry_after
from nachtwacht.store.db import StoreError
from nachtwacht.web.errors import ApiError
from nachtwacht.web.refused import refuse
from nachtwacht.web.state import runtime_of

router = APIRouter(tags=["errors"])
KIND = RECORD_KIND
JSON = "application/json"
# browser SDKs post from the application's origin; the DSN key is their only credential
CORS = {"Access-Control-Allow-Origin": "*"}


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


# a refusal's reason in nachtwacht_error_events_refused_total (errors/ingest_counts.py)
_BY_STATUS = {400: "invalid", 415: "invalid", 401: "auth", 403: "auth", 404: "auth"}
_BY_STATUS |= {413: "too_large", 429: "busy", 503: "unavailable"}


def _refuse(
    exc: IngestError, retry_after: int | None = None, reason: str | None = None
) -> Response:
    REFUSED.add(reason or _BY_STATUS.get(exc.status, "invalid"))
    headers = dict(CORS)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return _json(exc.status, {"detail": exc.detail, "field": exc.field}, headers)


def key_cache(request: Request) -> KeyCache:
    """One cache per running app (a new lifespan brings a new runtime and store)."""
    state = request.app.state
    runtime = runtime_of(request)
    held = getattr(state, "error_keys", None)
    if held is None or held[0] is not runtime:
        held = (runtime, KeyCache(key_loader(runtime.store), runtime.clock))
        state.error_keys = held
    return held[1]


async def _body(request: Request, cap: int) -> bytes:
    """The raw body, refused with 413 as soon as it passes `cap` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise too_large("the body", cap)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise too_large("the body", cap)
        chunks.append(chunk)
    return b"".join(chunks)


BACKLOG_CHECK = 0.1  # seconds between looks at the drainer's backlog


@dataclass
class Backlog:
    """The drainer's backlog as the endpoints see it, without taking the spool's lock per
    request (an append holds it through its fsync, and the event loop must not wait for that
    on every event): the last measurement plus what was accepted since, measured again every
    0.1 s and whenever that sum passes the limit. It can only overestimate, so a 429 is always
    checked against a fresh measurement."""

    runtime: Any
    measured: int = 0
    added: int = 0
    at: float = -1e9

    def over(self, limit: int) -> bool:
        now = time.monotonic()
        if now - self.at > BACKLOG_CHECK or self.measured + self.added > limit:
            self.measured, self.added, self.at = self.runtime.drainer.backlog_bytes, 0, now
        return self.measured + self.added > limit


def backlog(request: Request) -> Backlog:
    state, runtime = request.app.state, runtime_of(request)
    held = getattr(state, "error_backlog", None)
    if held is None or held.runtime is not runtime:
        held = state.error_backlog = Backlog(runtime)
    return held


def _overloaded(request: Request) -> IngestError | None:
    """429 while the drainer is behind by more than `errors.backlog_limit_bytes`."""
    limit = runtime_of(request).settings.errors.backlog_limit_bytes
    if backlog(request).over(limit):
        return IngestError(429, "the store is behind; try again later")
    return None


async def _project(request: Request, key: str | None, project_id: int) -> None:
    try:
        await _check_project(request, key, project_id)
    except IngestError as exc:
        # counted and logged: the SDK drops what is refused, so the app never hears of it
        reason = REFUSALS.get((exc.status, exc.field)) if key else "no_key"
        if reason is not None:
            refuse(request, "errors", reason, key)
        raise


# what each refusal of _check_project is called in /metrics and the log
REFUSALS: dict[tuple[int, str | None], str] = {
    (401, "sentry_key"): "unknown_key",
    (403, "sentry_key"): "wrong_project",
    (404, "project_id"): "unknown_project",
    (403, "project_id"): "disabled_project",
}


async def _check_project(request: Request, key: str | None, project_id: int) -> None:
    if not key:
        raise IngestError(
            401,
            "no DSN key: send X-Sentry-Auth: Sentry sentry_key=..., the sentry_key query "
            "parameter, or the envelope's dsn",
            "sentry_key",
        )
    cache = key_cache(request)
    try:
        entry = await cache.by_key(key)
    except StoreError as exc:
        # not a 401: the key may exist, and an SDK drops what is refused with a 401
        raise IngestError(503, f"project keys cannot be loaded: {exc}") from None
    if entry is None:
        raise IngestError(401, "unknown DSN key", "sentry_key")
    if entry.project_id != project_id:
        if all(e.project_id != project_id for e in cache.keys.values()):
            raise IngestError(404, f"no project {project_id}", "project_id")
        raise IngestError(403, "this DSN key belongs to another project", "sentry_key")
    if entry.disabled:
        raise IngestError(403, f"project '{entry.name}' is disabled", "project_id")


async def _accept(request: Request, records: list[bytes]) -> None:
    runtime = runtime_of(request)
    if len(records) == 1:
        await runtime.spool_put(KIND, records[0])
    elif records:
        await asyncio.gather(*(runtime.spool_put(KIND, r) for r in records))
    backlog(request).added += sum(len(r) for r in records)
    ACCEPTED.add("events", len(records))


def _given_key(request: Request) -> str | None:
    headers = request.headers
    key = parse_auth_header(headers.get("x-sentry-auth"))
    if key is None:
        auth = headers.get("authorization")
        if auth and auth[:7].lower() == "sentry ":
            key = parse_auth_header(auth)
    return key or request.query_params.get("sentry_key") or None


async def _ingest(request: Request, envelope: bool) -> Response:
    runtime = runtime_of(request)
    cfg = runtime.settings.errors
    retry = cfg.retry_after
    try:
        busy = _overloaded(request)
        if busy is not None:
            return _refuse(busy, retry)
        try:
            project_id = int(request.path_params["project_id"])
        except ValueError:
            refuse(request, "errors", "unknown_project", _given_key(request))
            raise IngestError(404, "no such project", "project_id") from None
        key = _given_key(request)
        if key is not None:  # a wrong key is refused before the body is read
            await _project(request, key, project_id)
        raw = await _body(request, cfg.max_envelope_bytes)
        body = decompress(raw, request.headers.get("content-encoding"), cfg.max_envelope_bytes)
        header_id: str | None = None
        if envelope:
            env = parse_envelope(body, cfg.max_event_bytes)
            payloads = env.events
            if len(payloads) == 1:
                header_id = env.header.get("event_id")
            if key is None:
                key = dsn_parts(env.header.get("dsn"))[0]
                await _project(request, key, project_id)
        else:
            if len(body) > cfg.max_event_bytes:
                raise too_large("the event", cfg.max_event_bytes)
            payloads = [body]
            if key is None:
                await _project(request, None, project_id)
        now = runtime.clock.now()
        ids: list[str] = []
        records: list[bytes] = []
        for payload in payloads:
            event_id, event_json, event = load_event(payload, header_id, cfg.max_event_depth)
            ids.append(event_id)
            records.append(build(project_id, now, event_json, event_meta(event, now)))
        await _accept(request, records)
    except IngestError as exc:
        return _refuse(exc, retry if exc.status in (429, 503) else None)
    except SpoolFull as exc:
        return _refuse(IngestError(429, f"the spool is full: {exc}"), retry, "spool_full")
    except SpoolError as exc:
        return _refuse(IngestError(503, f"events cannot be accepted: {exc}"), retry_after(exc))
    return _json(200, {"id": ids[-1]} if ids else {}, CORS)


def _ingest_key_given(request: Request) -> str | None:
    return bearer(request) or request.query_params.get("key")


async def envelope_endpoint(request: Request) -> Response:
    return await _ingest(request, envelope=True)


async def store_endpoint(request: Request) -> Response:
    return await _ingest(request, envelope=False)


async def preflight(request: Request) -> Response:
    return Response(
        status_code=204,
        headers={
            **CORS,
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type, Content-Encoding, X-Sentry-Auth",
            "Access-Control-Max-Age": "3600",
        },
    )


for _path, _endpoint in (("envelope", envelope_endpoint), ("store", store_endpoint)):
    for _slash in ("/", ""):
        router.add_route(
            f"/api/{{project_id}}/{_path}{_slash}",
            _endpoint,
            methods=["POST"],
            include_in_schema=False,
        )
        router.add_route(
            f"/api/{{project_id}}/{_path}{_slash}", preflight, methods=["OPTIONS"],
            include_in_schema=False,
        )  # fmt: skip


# -- the plain JSON endpoint -----------------------------------------------------------------


class JsonException(BaseModel):
    type: str = Field(min_length=1, max_length=200)
    value: str = Field("", max_length=100_000)
    stacktrace: str | list[dict[str, Any]] | dict[str, Any] | None = Field(
        None,
        description="A Python traceback as text, a list of Sentry frames (outermost first), "
        "or a Sentry stacktrace object {frames: [...]}.",
    )


class JsonEvent(BaseModel):
    project: str = Field(min_length=1, max_length=120, description="A project's name.")
    message: str | None = Field(None, max_length=100_000)
    exception: JsonException | None = None
    level: Literal["fatal", "error", "warning", "info", "debug"] = "error"
    environment: str | None = Field(None, max_length=64)
    release: str | None = Field(None, max_length=200)
    server_name: str | None = Field(None, max_length=200)
    transaction: str | None = Field(None, max_length=300)
    timestamp: float | str | None = Field(None, description="Epoch seconds or ISO 8601.")
    event_id: str | None = Field(None, description="32 hex digits (or a UUID); deduplicates.")
    fingerprint: list[str] | None = Field(None, max_length=50)
    tags: dict[str, str] | None = None
    extra: dict[str, Any] | None = None


def to_sentry(body: JsonEvent, event_id: str) -> dict[str, Any]:
    """The JSON endpoint's event in Sentry's shape, so it groups like any other."""
    event: dict[str, Any] = {
        "event_id": event_id,
        "level": body.level,
        "platform": "other",
        "logger": "json",
    }
    for name in ("environment", "release", "server_name", "transaction", "timestamp"):
        value = getattr(body, name)
        if value is not None:
            event[name] = value
    if body.message:
        event["message"] = body.message
    if body.fingerprint:
        event["fingerprint"] = body.fingerprint
    if body.tags:
        event["tags"] = body.tags
    if body.extra:
        event["extra"] = body.extra
    if body.exception is not None:
        exc: dict[str, Any] = {"type": body.exception.type, "value": body.exception.value}
        trace = body.exception.stacktrace
        if isinstance(trace, str):
            chain = pytrace.parse(trace)
            frames = chain[-1].get("stacktrace") if chain else None
            if frames:
                exc["stacktrace"] = frames
        elif isinstance(trace, list):
            exc["stacktrace"] = {"frames": trace}
        elif isinstance(trace, dict):
            exc["stacktrace"] = trace
        event["exception"] = {"values": [exc]}
    return event


@router.post(
    "/api/v1/errors/events",
    summary="Report one error as plain JSON (ingest key with scope errors)",
)
async def json_event(
    request: Request,
    body: JsonEvent,
    _key: Annotated[dict[str, Any], Depends(ingest_key("errors"))],
) -> Response:
    runtime = runtime_of(request)
    cfg = runtime.settings.errors
    if body.message is None and body.exception is None:
        raise ApiError(422, "send a message, an exception or both", "message")
    event_id = new_event_id()
    if body.event_id is not None:
        cleaned = clean_event_id(body.event_id)
        if cleaned is None:
            raise ApiError(422, "event_id must be 32 hex digits (or a UUID)", "event_id")
        event_id = cleaned
    busy = _overloaded(request)
    if busy is not None:
        return _refuse(busy, cfg.retry_after)
    try:
        entry = await key_cache(request).by_name(body.project)
    except StoreError as exc:
        return _refuse(IngestError(503, f"projects cannot be loaded: {exc}"), cfg.retry_after)
    if entry is None:
        refuse(request, "errors", "unknown_project", _ingest_key_given(request))
        REFUSED.add("auth")
        raise ApiError(422, f"no project named '{body.project}'", "project")
    if entry.disabled:
        refuse(request, "errors", "disabled_project", _ingest_key_given(request))
        REFUSED.add("auth")
        raise ApiError(403, f"project '{body.project}' is disabled", "project")
    event = to_sentry(body, event_id)
    event_json = orjson.dumps(event)
    if len(event_json) > cfg.max_event_bytes:
        return _refuse(too_large("the event", cfg.max_event_bytes))
    now = runtime.clock.now()
    try:
        await _accept(request, [build(entry.project_id, now, event_json, event_meta(event, now))])
    except SpoolFull as exc:
        return _refuse(IngestError(429, f"the spool is full: {exc}"), cfg.retry_after, "spool_full")
    except SpoolError as exc:
        return _refuse(IngestError(503, f"events cannot be accepted: {exc}"), retry_after(exc))
    return _json(200, {"id": event_id})
