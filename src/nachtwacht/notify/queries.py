"""Reading the outbox, for the CLI, the API and the senders: rows by id, listed, counted."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from sqlalchemy import Select, select

from nachtwacht.clock import iso
from nachtwacht.store import paging
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store

STATUSES = ("pending", "sending", "sent", "dead", "cancelled")
DONE = ("sent", "dead", "cancelled")  # a row in one of these is never sent (again)
o = t.outbox.c


def public_row(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "payload_json"}
    out["payload"] = json.loads(row["payload_json"]) if row.get("payload_json") else {}
    for key in ("next_attempt_at", "claimed_until", "created_at", "sent_at"):
        out[key] = iso(row.get(key))
    return out


def rows_by_id(store: Store, ids: Collection[int]) -> list[dict[str, Any]]:
    with store.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(t.outbox).where(o.id.in_(list(ids))).order_by(o.id)
            ).mappings()
        ]


def _outbox_query(status: str | None, incident_id: int | None) -> Select:
    query = select(t.outbox).order_by(o.id.desc())
    if status:
        query = query.where(o.status == status)
    if incident_id is not None:
        query = query.where(o.incident_id == incident_id)
    return query


def list_outbox(
    store: Store,
    status: str | None = None,
    limit: int | None = 100,
    incident_id: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """The newest outbox rows, optionally of one status or one incident."""
    query = paging.window(_outbox_query(status, incident_id), limit, offset)
    with store.connect() as conn:
        return [public_row(dict(r)) for r in conn.execute(query).mappings()]


def count_outbox(store: Store, status: str | None = None, incident_id: int | None = None) -> int:
    with store.connect() as conn:
        return paging.count(conn, _outbox_query(status, incident_id))
