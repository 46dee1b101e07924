"""/api/v1 routes for probes: thin wrappers over probes.service and probes.report."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from nachtwacht.clock import iso
from nachtwacht.engine.runtime import Runtime
from nachtwacht.probes import locations, report, service
from nachtwacht.web.errors import ApiError
from nachtwacht.web.pagination import Page, page, set_headers
from nachtwacht.web.state import runtime_of

router = APIRouter(prefix="/api/v1", tags=["probes"])
# bounds for epoch-second query parameters: finite, 1970 up to 9999-01-01 (the latest time every
# timezone can show); beyond them bucket numbers overflow the store's 64-bit integers
EPOCH: dict[str, Any] = {"ge": 0, "le": 253370764800, "allow_inf_nan": False}


def _runtime(request: Request) -> Runtime:
    return runtime_of(request)


def _probe(rt: Runtime, name: str) -> dict[str, Any]:
    with rt.store.connect() as conn:
        probe = service.probe_by_name(conn, name)
    if probe is None:
        raise ApiError(404, f"no probe named '{name}'", "name")
    return probe


def _public(p: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in p.items() if k != "id"}
    for key in ("since", "last_check", "first_failure"):
        out[key] = iso(p.get(key))
    return out


@router.get("/status")
async def get_status(request: Request) -> dict[str, Any]:
    rt = _runtime(request)

    def work() -> dict[str, Any]:
        with rt.store.connect() as conn:
            data = report.status_report(conn, rt.clock.now(), rt.settings.site)
        return report.add_paging(data, rt.settings)

    return await asyncio.to_thread(work)


@router.get("/probes")
async def list_probes(
    request: Request, response: Response, pg: Page = Depends(page)
) -> list[dict[str, Any]]:
    rt = _runtime(request)

    def work() -> list[dict[str, Any]]:
        with rt.store.connect() as conn:
            rows = service.probe_overview(conn, limit=pg.limit, offset=pg.offset)
            set_headers(request, response, pg, service.count_probes(conn))
        return [_public(p) for p in rows]

    return await asyncio.to_thread(work)


@router.get("/probes/{name}")
async def get_probe(request: Request, name: str) -> dict[str, Any]:
    rt = _runtime(request)

    def work() -> dict[str, Any]:
        probe = _probe(rt, name)
        out = _public(probe)
        with rt.store.connect() as conn:
            located = locations.location_view(
                conn, probe["id"], service.probe_config(conn, name) or {}
            )
        if located is not None:
            # a probe with `locations:`: its state at each (decision 25)
            out["down_when"] = located["down_when"]
            out["locations"] = [
                {**loc, "since": iso(loc["since"]), "last_check": iso(loc["last_check"])}
                for loc in located["locations"]
            ]
        return out

    return await asyncio.to_thread(work)


@router.get("/probes/{name}/results")
async def get_results(
    request: Request,
    name: str,
    response: Response,
    since: float | None = Query(None, description="epoch seconds", **EPOCH),
    pg: Page = Depends(page),
) -> list[dict[str, Any]]:
    rt = _runtime(request)

    def work() -> list[dict[str, Any]]:
        probe = _probe(rt, name)
        with rt.store.connect() as conn:
            rows = service.recent_results(conn, probe["id"], since, pg.limit, pg.offset)
            set_headers(request, response, pg, service.count_results(conn, probe["id"], since))
        return [{**r, "time": iso(r["ts"])} for r in rows]

    return await asyncio.to_thread(work)


@router.get("/probes/{name}/history")
async def get_history(
    request: Request, response: Response, name: str, pg: Page = Depends(page)
) -> list[dict[str, Any]]:
    rt = _runtime(request)

    def work() -> list[dict[str, Any]]:
        probe = _probe(rt, name)
        with rt.store.connect() as conn:
            rows = service.state_history(conn, probe["id"], pg.limit, pg.offset)
            set_headers(request, response, pg, service.count_history(conn, probe["id"]))
        return [
            {k: v for k, v in r.items() if k != "probe_id"} | {"time": iso(r["ts"])} for r in rows
        ]

    return await asyncio.to_thread(work)


@router.get("/probes/{name}/rollups")
async def get_rollups(
    request: Request,
    name: str,
    resolution: Literal["minute", "hour"] = "minute",
    since: float | None = Query(None, description="epoch seconds; default 24 hours ago", **EPOCH),
    until: float | None = Query(None, description="epoch seconds; default now", **EPOCH),
) -> list[dict[str, Any]]:
    rt = _runtime(request)
    now = rt.clock.now()
    start = since if since is not None else now - 86400
    end = until if until is not None else now
    if end < start:
        raise ApiError(422, "until must not be before since", "until")

    def work() -> list[dict[str, Any]]:
        probe = _probe(rt, name)
        with rt.store.connect() as conn:
            return service.rollups(conn, probe["id"], resolution, start, end)

    return await asyncio.to_thread(work)


@router.post("/probes/{name}/check")
async def check_now(request: Request, name: str) -> dict[str, Any]:
    rt = _runtime(request)
    probe = rt.scheduler.by_name.get(name)
    if probe is None:
        # another member checks it (docs/decisions/0024): check it here once, unrecorded,
        # so the answer does not depend on which process serves it
        st = await rt.scheduler.check_elsewhere(name)
        if st is None:
            raise ApiError(404, f"no enabled probe named '{name}'", "name")
    else:
        await rt.scheduler.run_now([name])
        st = probe.state
    return {
        "name": name,
        "state": st.state.value,
        "status": st.last_status.label if st.last_status is not None else None,
        "value": st.last_value,
        "latency_ms": st.last_latency_ms,
        "message": st.last_message,
        "checked_at": iso(st.last_check),
    }
