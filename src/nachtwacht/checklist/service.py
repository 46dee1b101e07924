"""Run the restoration checklist, record it (checklist_runs and the incident's timeline), list runs.

The CLI (`nachtwacht verify`), the API (POST /api/v1/checklist) and the review panel all call
`verify`. Items run one after another in the protocol's order, each bounded by
`reviews.checklist.item_timeout`: an item that hangs fails, it does not hang the checklist.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Connection, Select, select

from nachtwacht.checklist import items, live_items
from nachtwacht.checklist.items import Context, ItemResult
from nachtwacht.clock import iso
from nachtwacht.incidents import service as incidents
from nachtwacht.store import paging
from nachtwacht.store import tables as t
from nachtwacht.store.db import inserted_id

Item = Callable[[Context], Awaitable[ItemResult]]
CHECKS: dict[str, Item] = {
    "database": items.database,
    "web": items.web,
    "dashboard": live_items.dashboard,
    "analytics": items.analytics,
    "performance": items.performance,
    "api": live_items.api,
    "caches": items.caches,
    "alerts": live_items.alerts,
    "integrity": items.integrity,
    "access": live_items.access,
}


async def run_items(ctx: Context) -> list[ItemResult]:
    out = []
    for name, check in CHECKS.items():
        started = time.perf_counter()
        if name in ctx.cfg.skip:
            result = ItemResult(name, True, "skipped: listed in reviews.checklist.skip", True)
        else:
            try:
                async with asyncio.timeout(ctx.cfg.item_timeout):
                    result = await check(ctx)
            except TimeoutError:
                result = ItemResult(name, False, f"gave up after {ctx.cfg.item_timeout:g} s")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken check is a failed item, never a crashed run
                result = ItemResult(name, False, f"the check itself failed: {exc!r}"[:500])
        result.seconds = time.perf_counter() - started
        out.append(result)
    return out


def record(
    conn: Connection,
    incident_id: int | None,
    results: list[ItemResult],
    actor: str,
    now: float,
) -> dict[str, Any]:
    passed = all(r.ok for r in results)
    rows = [r.as_dict() for r in results]
    run_id = inserted_id(
        conn.execute(
            t.checklist_runs.insert().values(
                incident_id=incident_id,
                passed=passed,
                items_json=json.dumps(rows),
                ran_by=actor[:120],
                ran_at=now,
            )
        )
    )
    if incident_id is not None:
        failed = [r.item for r in results if not r.ok]
        skipped = [r.item for r in results if r.skipped]
        counted = len(results) - len(skipped)
        if passed:
            text = f"restoration checklist run #{run_id} passed ({counted} items"
            text += f", {len(skipped)} skipped)" if skipped else ")"
        else:
            text = f"restoration checklist run #{run_id} FAILED: {', '.join(failed)}"
        incidents.add_event(
            conn,
            incident_id,
            now,
            "checklist",
            actor,
            text,
            {"run_id": run_id, "passed": passed, "failed": failed, "skipped": skipped},
        )
    row = conn.execute(select(t.checklist_runs).where(t.checklist_runs.c.id == run_id))
    return view(dict(row.mappings().one()))


async def verify(ctx: Context) -> dict[str, Any]:
    """Run every item now and record the run; IncidentError (404) for an unknown incident."""
    if ctx.incident_id is not None:
        await asyncio.to_thread(_require_incident, ctx)
    results = await run_items(ctx)

    def save() -> dict[str, Any]:
        with ctx.store.begin() as conn:
            return record(conn, ctx.incident_id, results, ctx.actor, ctx.clock.now())

    return await asyncio.to_thread(save)


def _require_incident(ctx: Context) -> None:
    with ctx.store.connect() as conn:
        incidents.require(conn, ctx.incident_id)  # type: ignore[arg-type]


def view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "incident_id": row["incident_id"],
        "passed": bool(row["passed"]),
        "ran_by": row["ran_by"],
        "ran_at": iso(row["ran_at"]),
        "ran_at_ts": row["ran_at"],
        "items": json.loads(row["items_json"]),
    }


def _runs_query(incident_id: int | None) -> Select:
    c = t.checklist_runs.c
    query = select(t.checklist_runs).order_by(c.ran_at.desc(), c.id.desc())
    if incident_id is not None:
        query = query.where(c.incident_id == incident_id)
    return query


def list_runs(
    conn: Connection, incident_id: int | None = None, limit: int | None = 100, offset: int = 0
) -> list[dict[str, Any]]:
    rows = conn.execute(paging.window(_runs_query(incident_id), limit, offset)).mappings()
    return [view(dict(r)) for r in rows]


def count_runs(conn: Connection, incident_id: int | None = None) -> int:
    return paging.count(conn, _runs_query(incident_id))
