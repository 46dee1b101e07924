"""The agent endpoints (an agent token, one location) and the agents list (a viewer).

- `GET /api/v1/agent/probes`: the probes of the token's location, with their full config (an
  agent needs the passwords to run them) and an ETag; `If-None-Match` answers 304. Counts as
  the agent's contact, so an agent without probes is not silent.
- `POST /api/v1/agent/results`: `{"results": [{seq, probe_id, ts, status, value, latency_ms,
  lag_ms, message}, ...]}`, at most 1,000 in increasing `seq` and the body under
  `server.max_body_bytes`. Answers `{"stored", "duplicates", "refused", "last_seq"}`; the agent
  forgets its results up to `last_seq`. A result for a probe that is not (or no longer) at this
  location is refused (not stored) and counted, so a spool written under an older config drains.
- `GET /api/v1/agents`: every agent, its last contact and whether it is silent.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field, field_validator

from nachtwacht.agents import service
from nachtwacht.agents.service import AgentError
from nachtwacht.auth.deps import bearer, client_ip, run_in_store
from nachtwacht.web.state import runtime_of

router = APIRouter(prefix="/api/v1/agent", tags=["agents"])
views = APIRouter(prefix="/api/v1", tags=["agents"])

MAX_RESULTS = 1000
FUTURE = 300.0  # an agent's clock may run this far ahead of the server's
PAST = 7 * 86400.0  # results older than this are refused (a spool kept for a week is stale)


async def agent_location(request: Request) -> str:
    """The location of the request's agent token; 401 without a valid one."""
    token = bearer(request)
    location = await run_in_store(
        request, lambda conn, now: service.resolve_agent_token(conn, token, now)
    )
    if location == runtime_of(request).settings.server.location:
        # its results would mix with the server's own checks of the same probes
        raise AgentError(f"'{location}' is the server's own location (server.location)",
                         field="token", kind="forbidden")  # fmt: skip
    return location


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


class AgentResult(BaseModel):
    seq: int = Field(ge=1, le=2**62)
    probe_id: int = Field(ge=1, le=2**31)
    ts: float
    status: int = Field(ge=0, le=3)
    value: float | None = None
    latency_ms: float | None = Field(default=None, ge=0)
    lag_ms: float | None = Field(default=None, ge=0)
    message: str | None = Field(default=None, max_length=500)

    _checked = field_validator("ts", "value", "latency_ms", "lag_ms")(_finite)


class ResultBatch(BaseModel):
    results: list[AgentResult] = Field(max_length=MAX_RESULTS)
    version: str | None = Field(default=None, max_length=32)


@router.get("/probes")
async def agent_probes(
    request: Request, response: Response, location: str = Depends(agent_location)
) -> Any:
    rt = runtime_of(request)
    ip = client_ip(request)
    version = request.headers.get("x-nachtwacht-agent", "")[:32] or None

    def work(conn: Any, now: float) -> dict[str, Any]:
        row, queued = service.touch_agent(conn, rt.settings, location, now, ip, version)
        configs = service.probes_at(rt.settings, location)
        ids = service.probe_ids(conn, (c.name for c in configs))
        probes = [
            {"id": ids[c.name], "config": c.model_dump(mode="json")}
            for c in configs
            if c.name in ids
        ]
        return {"location": location, "last_seq": int(row.last_seq), "probes": probes,
                "queued": queued}  # fmt: skip

    body = await run_in_store(request, work)
    if body.pop("queued"):
        rt.wake_outbox()
    etag = '"' + hashlib.sha256(orjson.dumps(body["probes"])).hexdigest()[:20] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-store"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    body["version"] = etag.strip('"')
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


@router.post("/results")
async def agent_results(
    request: Request, batch: ResultBatch, location: str = Depends(agent_location)
) -> dict[str, Any]:
    rt = runtime_of(request)
    ip = client_ip(request)
    now = rt.clock.now()
    for r in batch.results:
        if not now - PAST <= r.ts <= now + FUTURE:
            raise AgentError(
                f"result seq {r.seq}: its time is more than {FUTURE:g} s ahead of the server's "
                f"or more than {PAST / 86400:g} days old",
                field="results",
            )
    rows = [r.model_dump() for r in batch.results]

    def work(conn: Any, now: float) -> dict[str, Any]:
        return service.accept_results(conn, rt.settings, location, rows, now, ip, batch.version)

    answer = await run_in_store(request, work)
    if answer.pop("changed"):
        rt.alerting.wake()
    if answer.pop("queued"):
        rt.wake_outbox()
    return answer


@views.get("/agents")
async def list_agents(request: Request) -> list[dict[str, Any]]:
    rt = runtime_of(request)

    def work() -> list[dict[str, Any]]:
        with rt.store.connect() as conn:
            return service.agent_overview(
                conn, rt.clock.now(), rt.settings.server.agent_silent_after
            )

    return await asyncio.to_thread(work)
