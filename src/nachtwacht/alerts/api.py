"""/api/v1 doors for external alerts, maintenance windows and silences (thin wrappers).

External alerts go through the same pipeline as probe alerts (`alerts.service.process`), all
signals of one request in one transaction, so an Alertmanager notification is taken whole or
not at all (a 5xx makes Alertmanager retry it).

While the store is unavailable (or alerts received earlier still wait in the spool) a valid
request is appended whole to the durable spool and answered 200 with `"spooled": true` and
action `spooled` per alert; the drainer runs the same pipeline when the store is back, in the
order the requests arrived (`spool.ingest`). Only when the spool refuses too is it a 503.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from nachtwacht.alerts import service, silences, windows
from nachtwacht.alerts.external import (
    AlertmanagerWebhook,
    GenericAlert,
    signal_from_generic,
    signals_from_alertmanager,
)
from nachtwacht.alerts.spooled import ALERT, alert_record
from nachtwacht.auth.deps import IGNORED_ACTOR, actor
from nachtwacht.clock import iso
from nachtwacht.config import limits
from nachtwacht.spool.ingest import accept
from nachtwacht.spool.log import SpoolError, retry_after
from nachtwacht.web.errors import ApiError
from nachtwacht.web.pagination import Page, page, set_headers
from nachtwacht.web.state import runtime_of

router = APIRouter(prefix="/api/v1", tags=["alerts"])

# row ids are 32-bit in every store (MariaDB INT); a larger one is a 422 naming the parameter,
# not an integer overflow in the driver
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
T = TypeVar("T")

TimeValue = str | float | None
Names = Annotated[list[Annotated[str, Field(max_length=limits.NAME)]], Field(max_length=100)]
Matcher = Annotated[str | None, Field(max_length=limits.TITLE)]


def _rt(request: Request) -> Any:
    return runtime_of(request)


def _wake(request: Request) -> None:
    # pages go out at once instead of at the outbox's next poll (when the runtime offers it)
    wake = getattr(_rt(request), "wake_outbox", None)
    if callable(wake):
        wake()


async def _write(request: Request, work: Callable[[Connection, Any, float], T]) -> T:
    """Run `work(conn, runtime, now)` in one transaction off the event loop."""
    rt = _rt(request)

    def run() -> T:
        now = rt.clock.now()
        with rt.store.begin() as conn:
            return work(conn, rt, now)

    return await asyncio.to_thread(run)


async def _read(request: Request, work: Callable[[Connection, Any, float], T]) -> T:
    rt = _rt(request)

    def run() -> T:
        with rt.store.connect() as conn:
            return work(conn, rt, rt.clock.now())

    return await asyncio.to_thread(run)


def _outcome(signal: service.Signal, outcome: service.Outcome) -> dict[str, Any]:
    return {
        "alert_id": outcome.alert_id,
        "incident_id": outcome.incident_id,
        "action": outcome.action,
        "muted_by": outcome.muted_by,
        "fingerprint": signal.fingerprint,
    }


async def ingest(
    rt: Any, door: str, body: BaseModel, make: Callable[[float], list[service.Signal]]
) -> dict[str, Any]:
    """Process now, or spool the whole request while the store cannot take it.

    Raises SpoolError when the spool refuses too. `rt` is the app's runtime.
    """
    now = rt.clock.now()
    signals = make(now)

    def work(conn: Connection) -> list[dict[str, Any]]:
        return [_outcome(s, service.process(conn, rt.settings, s, now)) for s in signals]

    done = await accept(
        rt, ALERT, work, lambda _maybe: alert_record(door, body.model_dump(mode="json"), now)
    )
    if done.spooled:
        queued = [
            {
                "alert_id": None,
                "incident_id": None,
                "action": "spooled",
                "muted_by": None,
                "fingerprint": s.fingerprint,
            }
            for s in signals
        ]
        return {"alerts": queued, "spooled": True}
    return {"alerts": done.result or [], "spooled": False}


async def _ingest(
    request: Request, door: str, body: BaseModel, make: Callable[[float], list[service.Signal]]
) -> dict[str, Any]:
    try:
        out = await ingest(_rt(request), door, body, make)
    except SpoolError as exc:
        raise ApiError(
            503,
            f"the alert was not recorded, try again: {exc}",
            headers={"Retry-After": str(retry_after(exc))},
        ) from None
    if any(r["action"] in ("opened", "resolved") for r in out["alerts"]):
        _wake(request)
    return out


# ingestion: mounted on its own, behind per-source ingest keys instead of user logins
ingest_router = APIRouter(prefix="/api/v1", tags=["alerts"])


@ingest_router.post("/alerts")
async def post_alert(request: Request, body: GenericAlert) -> dict[str, Any]:
    """Raise (or resolve, with "status": "resolved") one alert from any system."""
    return await _ingest(request, "generic", body, lambda now: [signal_from_generic(body, now)])


@ingest_router.post("/alerts/alertmanager")
async def post_alertmanager(request: Request, body: AlertmanagerWebhook) -> dict[str, Any]:
    """Prometheus Alertmanager's webhook_config receiver (payload version 4)."""
    return await _ingest(
        request, "alertmanager", body, lambda now: signals_from_alertmanager(body, now)
    )


def alert_view(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "labels_json"}
    try:
        labels = json.loads(row["labels_json"]) if row["labels_json"] else {}
    except (ValueError, RecursionError):
        labels = {}
    # labels stored before the door checked depth must not break the list for everyone
    out["labels"] = limits.clip_depth(labels, limits.JSON_DEPTH)
    for key in ("started_at", "fired_at", "resolved_at", "last_seen"):
        out[key] = iso(row[key])
    return out


@router.get("/alerts")
async def list_alerts(
    request: Request,
    response: Response,
    status: Literal["firing", "resolved", "all"] = "firing",
    pg: Page = Depends(page),
) -> list[dict[str, Any]]:
    def work(conn: Connection, _rt: Any, _now: float) -> list[dict[str, Any]]:
        total, rows = service.list_alerts(conn, status, pg.limit, pg.offset)
        set_headers(request, response, pg, total)
        return [alert_view(r) for r in rows]

    return await _read(request, work)


# ---------------------------------------------------------------------------- maintenance


class MaintenanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    starts_at: TimeValue = None
    ends_at: TimeValue = None
    duration: TimeValue = None
    components: Names = Field(default_factory=list)
    probes: Names = Field(default_factory=list)
    comment: str = Field("", max_length=limits.TEXT)
    created_by: str = Field(
        "api", min_length=1, max_length=limits.NAME, deprecated=True, description=IGNORED_ACTOR
    )


@router.get("/maintenance")
async def list_maintenance(
    request: Request,
    response: Response,
    all: bool = Query(False, description="Include ended and past windows."),
    pg: Page = Depends(page),
) -> list[dict[str, Any]]:
    def work(conn: Connection, rt: Any, now: float) -> list[dict[str, Any]]:
        # config windows and store windows are merged and ordered by state (active first) in
        # Python, so this one list pages after the merge; there are few windows of either kind
        rows = windows.list_windows(conn, rt.settings, now, include_past=all)
        set_headers(request, response, pg, len(rows))
        return rows[pg.offset : pg.offset + pg.limit]

    return await _read(request, work)


@router.post("/maintenance", status_code=201)
async def add_maintenance(request: Request, body: MaintenanceIn) -> dict[str, Any]:
    """A one-off window: muted paging for the components/probes (none: the whole site)."""
    who = actor(request)

    def work(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        start, end = windows.span(
            now, rt.settings.zone, start=body.starts_at, end=body.ends_at, duration=body.duration
        )
        window_id = windows.add_window(
            conn,
            rt.settings,
            name=body.name,
            starts_at=start,
            ends_at=end,
            now=now,
            created_by=who,
            components=body.components,
            probes=body.probes,
            comment=body.comment,
        )
        row = windows.get_window(conn, window_id)
        assert row is not None
        return windows.store_window_view(row, now)

    return await _write(request, work)


@router.post("/maintenance/{window_id}/end")
async def end_maintenance(request: Request, window_id: RowId) -> dict[str, Any]:
    def work(conn: Connection, _rt: Any, now: float) -> dict[str, Any]:
        return windows.store_window_view(windows.end_window(conn, window_id, now), now)

    return await _write(request, work)


# ---------------------------------------------------------------------------- silences


class SilenceIn(BaseModel):
    """Exactly one of matcher, probe, component, fingerprint or all."""

    model_config = ConfigDict(extra="forbid")

    matcher: Matcher = None
    probe: Matcher = None
    component: Matcher = None
    fingerprint: Matcher = None
    all: bool = False
    starts_at: TimeValue = None
    ends_at: TimeValue = None
    duration: TimeValue = None
    comment: str = Field("", max_length=limits.TEXT)
    created_by: str = Field(
        "api", min_length=1, max_length=limits.NAME, deprecated=True, description=IGNORED_ACTOR
    )

    def to_matcher(self) -> str:
        given = [
            m
            for m in (
                self.matcher,
                f"probe:{self.probe}" if self.probe is not None else None,
                f"component:{self.component}" if self.component is not None else None,
                f"fingerprint:{self.fingerprint}" if self.fingerprint is not None else None,
                "all" if self.all else None,
            )
            if m is not None
        ]
        if len(given) != 1:
            raise windows.WindowError(
                "matcher: give exactly one of matcher, probe, component, fingerprint or all",
                "matcher",
            )
        return given[0]


@router.get("/silences")
async def list_silences(
    request: Request,
    response: Response,
    all: bool = Query(False, description="Include expired silences."),
    pg: Page = Depends(page),
) -> list[dict[str, Any]]:
    def work(conn: Connection, _rt: Any, now: float) -> list[dict[str, Any]]:
        set_headers(request, response, pg, silences.count_silences(conn, now, all))
        return silences.list_silences(conn, now, all, pg.limit, pg.offset)

    return await _read(request, work)


@router.post("/silences", status_code=201)
async def add_silence(request: Request, body: SilenceIn) -> dict[str, Any]:
    who = actor(request)

    def work(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        matcher = body.to_matcher()
        start, end = windows.span(
            now, rt.settings.zone, start=body.starts_at, end=body.ends_at, duration=body.duration
        )
        silence_id = silences.add_silence(
            conn,
            rt.settings,
            matcher=matcher,
            starts_at=start,
            ends_at=end,
            now=now,
            created_by=who,
            comment=body.comment,
        )
        row = silences.get_silence(conn, silence_id)
        assert row is not None
        return silences.silence_view(row, now)

    return await _write(request, work)


@router.post("/silences/{silence_id}/expire")
async def expire_silence(request: Request, silence_id: RowId) -> dict[str, Any]:
    def work(conn: Connection, _rt: Any, now: float) -> dict[str, Any]:
        return silences.silence_view(silences.expire_silence(conn, silence_id, now), now)

    return await _write(request, work)
