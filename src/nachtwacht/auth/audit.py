"""The audit log: writing an entry, reading and counting entries, exporting them."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    select,
)

from nachtwacht.auth.checks import AuthError, clip
from nachtwacht.clock import iso
from nachtwacht.store import auditchain, paging
from nachtwacht.store import tables as t


def audit(
    conn: Connection,
    actor: str,
    action: str,
    target: str | None,
    detail: dict[str, Any] | None,
    ip: str | None,
    now: float,
) -> None:
    """Append an entry to the hash-chained audit log, in the caller's transaction.

    The only writer of `audit_log`: the chain (store/auditchain.py) holds only if every entry
    goes through here. Appends are serialised until the transaction ends, so call this late.
    """
    auditchain.append(
        conn,
        {
            "ts": now,
            "actor": clip(actor, 120) or "?",
            "action": action[:64],
            "target": clip(target, 300),
            "detail_json": json.dumps(detail, sort_keys=True, default=str) if detail else None,
            "ip": clip(ip, 64),
        },
        now,
    )


def _audit_query(since: float | None, action: str | None, actor: str | None) -> Select:
    a = t.audit_log.c
    query = select(t.audit_log).order_by(a.ts.desc(), a.id.desc())
    if since is not None:
        query = query.where(a.ts >= since)
    if action:
        family = action.endswith(".")
        query = query.where(
            a.action.startswith(action, autoescape=True) if family else a.action == action
        )
    if actor:
        query = query.where(a.actor == actor)
    return query


def count_audit(
    conn: Connection,
    since: float | None = None,
    *,
    action: str | None = None,
    actor: str | None = None,
) -> int:
    return paging.count(conn, _audit_query(since, action, actor))


def audit_log(
    conn: Connection,
    since: float | None = None,
    limit: int = 1000,
    *,
    action: str | None = None,
    actor: str | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Entries at or after `since`, newest first; `action` may end in `.` to match a family."""
    query = paging.window(_audit_query(since, action, actor), max(1, limit), offset)
    return [
        {
            "id": r["id"],
            "ts": iso(r["ts"]),
            "actor": r["actor"],
            "action": r["action"],
            "target": r["target"],
            "detail": json.loads(r["detail_json"]) if r["detail_json"] else {},
            "ip": r["ip"],
        }
        for r in conn.execute(query).mappings()
    ]


def parse_since(value: str | None) -> float | None:
    """Epoch seconds or ISO 8601 (UTC unless it says otherwise); None or '' is None."""
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise AuthError(f"'{value}' is not a time", field="since")
        return number
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise AuthError(f"'{value}' is neither epoch seconds nor ISO 8601", field="since") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


AUDIT_FIELDS = ("id", "ts", "actor", "action", "target", "ip", "detail")


def export_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(AUDIT_FIELDS)
    for row in rows:
        values = [row[f] for f in AUDIT_FIELDS[:-1]]
        detail = json.dumps(row["detail"], sort_keys=True) if row["detail"] else ""
        # a cell starting with = + - @ is a formula to a spreadsheet: neutralise it
        writer.writerow([_csv_safe(v) for v in [*values, detail]])
    return out.getvalue()


def _csv_safe(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def export_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
