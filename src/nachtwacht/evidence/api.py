"""/api/v1/evidence: capture a bundle, list them, verify one.

Verification takes a bundle by its id, or its file (`bundle`: a name or path inside the evidence
directory): the API never opens arbitrary files of the server for whoever asks.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field, model_validator

from nachtwacht.auth.deps import actor
from nachtwacht.evidence import service
from nachtwacht.web.errors import ApiError
from nachtwacht.web.pagination import Page, page, set_headers
from nachtwacht.web.state import runtime_of

router = APIRouter(tags=["evidence"])


class CaptureRequest(BaseModel):
    incident_id: int | None = Field(None, ge=1, le=2**31 - 1)


class VerifyRequest(BaseModel):
    id: int | None = Field(None, ge=1, le=2**31 - 1, description="A bundle's id.")
    bundle: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        pattern=r"^[^\x00]+$",
        description="Or its file: a name in the evidence directory, or a path inside it.",
    )

    @model_validator(mode="after")
    def _one(self) -> VerifyRequest:
        if (self.id is None) == (self.bundle is None):
            raise ValueError("give either id or bundle")
        return self


@router.post("/api/v1/evidence", status_code=201)
async def capture(request: Request, body: CaptureRequest | None = None) -> dict[str, Any]:
    """Collect the system's state into a hashed bundle (takes a few seconds)."""
    rt = runtime_of(request)
    body = body or CaptureRequest()
    who = actor(request)
    try:
        return await asyncio.to_thread(
            service.capture_bundle,
            rt.store,
            rt.settings,
            rt.clock,
            incident_id=body.incident_id,
            actor=who,
        )
    except OSError as exc:
        raise ApiError(507, f"cannot write the bundle: {exc}", None) from None


@router.get("/api/v1/evidence")
async def list_bundles(
    request: Request,
    response: Response,
    incident_id: int | None = Query(None, ge=1, le=2**31 - 1),
    pg: Page = Depends(page),
) -> list[dict[str, Any]]:
    rt = runtime_of(request)

    def work() -> list[dict[str, Any]]:
        with rt.store.connect() as conn:
            rows = service.list_bundles(conn, incident_id, pg.limit, pg.offset)
            set_headers(request, response, pg, service.count_bundles(conn, incident_id))
        return rows

    return await asyncio.to_thread(work)


@router.post("/api/v1/evidence/verify")
async def verify(request: Request, body: VerifyRequest) -> dict[str, Any]:
    """Recompute every hash of a bundle; `ok` is false when anything changed."""
    rt = runtime_of(request)
    directory = service.evidence_dir(rt.settings).resolve()

    def work() -> dict[str, Any]:
        if body.id is not None:
            with rt.store.connect() as conn:
                row = service.get_bundle(conn, body.id)
            if row is None:
                raise ApiError(404, f"no evidence bundle {body.id}", "id")
            path = Path(row["path"])
        else:
            path = Path(body.bundle or "")
            path = (path if path.is_absolute() else directory / path).resolve()
            if not path.is_relative_to(directory):
                raise ApiError(
                    422, f"bundle must be inside the evidence directory {directory}", "bundle"
                )
            try:
                exists = path.is_file()
            except OSError as exc:  # a name longer than the filesystem allows, ...
                raise ApiError(422, f"not a usable path: {exc.strerror}", "bundle") from None
            if not exists:
                raise ApiError(404, f"{path} does not exist", "bundle")
        # a recorded bundle whose file is gone is not a 404: the evidence is not intact
        return service.verify(rt.store, path).as_dict()

    return await asyncio.to_thread(work)
