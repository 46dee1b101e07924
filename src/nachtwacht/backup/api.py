"""JSON API routes under /api/v1 (protected by `access`, mounted in web/app.py).

GET  /api/v1/backups                 the backups, newest first (viewer)
POST /api/v1/backups                 make a backup now (admin)
POST /api/v1/backups/{name}/verify   recompute a backup's sums and row counts (responder)
GET  /api/v1/store/check             the store's integrity check (viewer)
GET  /api/v1/restore-tests           the newest restore tests and the overview's verdict (viewer)
POST /api/v1/backups/test-restore    restore the newest backup into a scratch store (admin)

Restore is deliberately not offered over HTTP: it replaces the store under the running server.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from nachtwacht.auth.deps import require
from nachtwacht.backup import restoretest, service
from nachtwacht.backup.integrity import check_store
from nachtwacht.backup.manifest import BackupError
from nachtwacht.backup.restore import verify_backup
from nachtwacht.engine.runtime import Runtime
from nachtwacht.web.errors import ApiError
from nachtwacht.web.state import runtime_of

router = APIRouter(tags=["backups"])

BackupName = Annotated[
    str, Path(pattern=service.NAME_RE.pattern, description="e.g. nachtwacht-20270115T080000Z")
]


def _rt(request: Request) -> Runtime:
    return runtime_of(request)


@router.get("/api/v1/backups", summary="List backups")
async def list_backups(request: Request) -> list[dict[str, Any]]:
    directory = service.backup_dir(_rt(request).settings)
    backups = await asyncio.to_thread(service.list_backups, directory)
    return [b.as_dict() for b in backups]


@router.post(
    "/api/v1/backups",
    summary="Make a backup now",
    status_code=201,
    dependencies=[Depends(require("admin"))],
)
async def create_backup(request: Request) -> dict[str, Any]:
    rt = _rt(request)
    directory = service.backup_dir(rt.settings)
    try:
        info = await asyncio.to_thread(service.create_backup, rt.store, directory, rt.clock.now())
    except BackupError as exc:
        raise ApiError(500, str(exc)) from None
    return info.as_dict()


@router.post("/api/v1/backups/{name}/verify", summary="Verify a backup")
async def verify(request: Request, name: BackupName) -> dict[str, Any]:
    directory = service.backup_dir(_rt(request).settings)
    try:
        path = service.find(directory, name)
    except BackupError as exc:
        raise ApiError(404, str(exc), "name") from None
    report = await asyncio.to_thread(verify_backup, path)
    return report.as_dict()


@router.get("/api/v1/store/check", summary="Check the store's integrity and schema version")
async def store_check(request: Request) -> dict[str, Any]:
    report = await asyncio.to_thread(check_store, _rt(request).store)
    return report.as_dict()


@router.get("/api/v1/restore-tests", summary="The restore tests, newest first")
async def restore_tests(request: Request) -> dict[str, Any]:
    rt = _rt(request)

    def work() -> dict[str, Any]:
        with rt.store.connect() as conn:
            now = rt.clock.now()
            return {
                **restoretest.status(conn, rt.settings, now),
                "tests": restoretest.recent(conn, 50),
            }

    return await asyncio.to_thread(work)


@router.post(
    "/api/v1/backups/test-restore",
    summary="Restore the newest backup into a scratch store and check it",
    dependencies=[Depends(require("admin"))],
)
async def test_restore(request: Request) -> dict[str, Any]:
    rt = _rt(request)
    if not await asyncio.to_thread(service.list_backups, service.backup_dir(rt.settings)):
        raise ApiError(409, "no backup to test: make one first (POST /api/v1/backups)")
    result = await asyncio.to_thread(restoretest.run, rt.settings, rt.store, rt.clock)
    rt.wake_outbox()  # a failed test raised its alert, which may page
    return result
