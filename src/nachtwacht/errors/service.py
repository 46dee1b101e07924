"""Storing spooled error events: group them into issues, a whole batch at a time.

`store_events` is the drainer's handler for `error_event` records. It runs inside the
drainer's transaction (which also moves the spool cursor) and is the only writer of events,
issue counts and hourly counts, so it can read the current rows once and write the sums back
without racing another writer. A batch of N events costs a fixed number of queries per
project in it (existing event ids, existing issues, one bulk insert, one bulk update, one bulk
upsert) plus one insert per new issue, whatever N is.

Issue states: `unresolved`; `resolved`, which an event that happened after the resolution
reopens (status `unresolved`, `regressed_at` set: a regression); and `ignored`, which stays
ignored while its counts go on.

A new issue and a regression set `alert_due` in the same statement that writes them: the
obligation to alert commits with the issue, and `errors.alerting` raises it (decision 21).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.dialects import mysql, postgresql, sqlite

from nachtwacht.errors import normalize as n
from nachtwacht.errors.fingerprint import labels
from nachtwacht.errors.records import Item, parse
from nachtwacht.store import tables as t
from nachtwacht.store.db import inserted_id

log = logging.getLogger(__name__)
STORED_LIMIT = 60_000  # bytes of data_json; MariaDB's TEXT holds 65,535
ID_CHUNK = 500  # ids per IN (...) list
CHUNK = 500  # records stored per round of statements


def _chunks(values: list[Any], size: int = ID_CHUNK) -> list[list[Any]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


# statements built once: a batch runs each of them, and building costs more than running
_E, _I, _P = t.error_events.c, t.error_issues.c, t.error_projects.c
STORED_IDS = select(_E.event_id).where(
    _E.project_id == bindparam("b_project"), _E.event_id.in_(bindparam("b_ids", expanding=True))
)
ISSUES_BY_FP = select(
    _I.id, _I.fingerprint, _I.status, _I.resolved_at, _I.first_seen, _I.last_seen
).where(
    _I.project_id == bindparam("b_project"),
    _I.fingerprint.in_(bindparam("b_fps", expanding=True)),
)
PROJECTS = select(_P.id, _P.environment).where(_P.id.in_(bindparam("b_ids", expanding=True)))
INSERT_EVENTS = insert(t.error_events)
INSERT_ISSUE = insert(t.error_issues)
UPDATE_WITH_EVENT = (
    update(t.error_issues)
    .where(_I.id == bindparam("b_id"))
    .values(
        count=_I.count + bindparam("b_n"),
        first_seen=bindparam("b_first"),
        last_seen=bindparam("b_last"),
        last_event_id=bindparam("b_event"),
    )
)
UPDATE_COUNTS = (
    update(t.error_issues)
    .where(_I.id == bindparam("b_id"))
    .values(
        count=_I.count + bindparam("b_n"),
        first_seen=bindparam("b_first"),
        last_seen=bindparam("b_last"),
    )
)
REGRESS = (
    update(t.error_issues)
    .where(_I.id == bindparam("b_id"), _I.status == "resolved")
    .values(
        status="unresolved",
        regressed_at=bindparam("b_at"),
        alert_due="regression",
        alert_due_at=bindparam("b_at"),
    )
)


def _stored(conn: Connection, project_id: int, event_ids: list[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(event_ids):
        rows = conn.execute(STORED_IDS, {"b_project": project_id, "b_ids": chunk})
        found.update(r[0] for r in rows)
    return found


def _issues(conn: Connection, project_id: int, fingerprints: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for chunk in _chunks(fingerprints):
        for row in conn.execute(ISSUES_BY_FP, {"b_project": project_id, "b_fps": chunk}):
            out[row.fingerprint] = row
    return out


def store_events(
    conn: Connection, payloads: list[bytes], now: float, *, stored_limit: int = STORED_LIMIT
) -> int:
    """Group and store a batch of spooled events; return how many were new.

    Taken `CHUNK` records at a time, so the rows being built never hold more than that many
    events (a drainer batch can be 2,000); later chunks see what earlier ones wrote, as it is
    one transaction."""
    total = 0
    for start in range(0, len(payloads), CHUNK):
        total += _store_chunk(conn, payloads[start : start + CHUNK], now, stored_limit)
    return total


def _store_chunk(conn: Connection, payloads: list[bytes], now: float, stored_limit: int) -> int:
    items = parse(payloads, now)
    if not items:
        return 0
    wanted = sorted({i.project_id for i in items})
    projects = {r.id: r.environment for r in conn.execute(PROJECTS, {"b_ids": wanted})}
    by_project: dict[int, list[Item]] = defaultdict(list)
    for item in items:
        if item.project_id in projects:
            by_project[item.project_id].append(item)
        else:
            log.warning(
                "error event %s of removed project %s dropped", item.event_id, item.project_id
            )
    total = 0
    for project_id, group_items in by_project.items():
        total += _store_project(conn, project_id, projects[project_id], group_items, stored_limit)
    return total


def _store_project(
    conn: Connection,
    project_id: int,
    default_env: str | None,
    items: list[Item],
    stored_limit: int,
) -> int:
    known = _stored(conn, project_id, [i.event_id for i in items])
    items = [i for i in items if i.event_id not in known]
    if not items:
        return 0
    wanted = sorted({h for i in items for _, h in i.meta["fp"]})
    existing = _issues(conn, project_id, wanted)
    # which issue each event joins: the one of the oldest fingerprint version that matches,
    # so an issue keeps every event it would have had before a newer version came
    fresh: dict[str, list[Item]] = defaultdict(list)  # new fingerprint -> its events
    for item in items:
        fps = sorted(item.meta["fp"])  # oldest version first
        match = next((h for _, h in fps if h in existing), None)
        if match is None:
            match = fps[-1][1]  # the newest version's
            fresh[match].append(item)
        item.issue = match
    issue_ids: dict[str, int] = {fp: row.id for fp, row in existing.items()}
    for fp, group_items in fresh.items():
        issue_ids[fp] = _new_issue(conn, project_id, fp, default_env, group_items)
    _update_issues(conn, existing, items)
    rows = [_event_row(item, issue_ids[item.issue], default_env, stored_limit) for item in items]
    conn.execute(INSERT_EVENTS, rows)
    hours: dict[tuple[int, int], int] = defaultdict(int)
    for row in rows:
        hours[(row["issue_id"], int(row["ts"] // 3600))] += 1
    add_hours(conn, hours)
    return len(rows)


def _new_issue(
    conn: Connection, project_id: int, fingerprint: str, default_env: str | None, items: list[Item]
) -> int:
    first = items[0]
    version = max(v for v, h in first.meta["fp"] if h == fingerprint)
    title, culprit, exc_type, category = labels(first.event())
    latest = max(items, key=lambda i: i.ts)
    values = {
        "project_id": project_id,
        "fingerprint": fingerprint,
        "fingerprint_version": version,
        "title": title[:300],
        "culprit": culprit[:300] if culprit else None,
        "exc_type": exc_type,
        "level": first.meta["level"],
        "category": category,
        "status": "unresolved",
        "first_seen": min(i.ts for i in items),
        "last_seen": latest.ts,
        "count": len(items),
        "environment": first.meta["environment"] or default_env,
        "first_release": first.meta["release"],
        "last_event_id": latest.event_id,
        # the alert it means, raised by errors/alerting.py after this commits
        "alert_due": "new",
        "alert_due_at": min(i.ts for i in items),
    }
    values = _clean(values)
    return inserted_id(conn.execute(INSERT_ISSUE.values(**values)))


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """Without NUL characters, which PostgreSQL refuses in text (JSON keeps them escaped)."""
    for key, value in row.items():
        if isinstance(value, str) and "\x00" in value:
            row[key] = value.replace("\x00", "")
    return row


def _update_issues(conn: Connection, existing: dict[str, Any], items: list[Item]) -> None:
    """Counts, first/last seen and the latest event of issues that existed before the batch;
    a resolved issue with an event that happened after its resolution is reopened."""
    joined: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        if item.issue in existing:
            joined[item.issue].append(item)
    if not joined:
        return
    changes, regressions = [], []
    for fp, group_items in joined.items():
        row = existing[fp]
        latest = max(group_items, key=lambda i: i.ts)
        changes.append(
            {
                "b_id": row.id,
                "b_n": len(group_items),
                "b_first": min(row.first_seen, min(i.ts for i in group_items)),
                "b_last": max(row.last_seen, latest.ts),
                "b_event": latest.event_id if latest.ts >= row.last_seen else None,
            }
        )
        if row.status == "resolved":
            after = [i.ts for i in group_items if i.ts > (row.resolved_at or 0.0)]
            if after:
                regressions.append({"b_id": row.id, "b_at": min(after)})
    with_event = [ch for ch in changes if ch["b_event"] is not None]
    without = [
        {k: v for k, v in ch.items() if k != "b_event"} for ch in changes if ch["b_event"] is None
    ]
    if with_event:
        conn.execute(UPDATE_WITH_EVENT, with_event)
    if without:
        conn.execute(UPDATE_COUNTS, without)
    if regressions:
        conn.execute(REGRESS, regressions)


def _event_row(item: Item, issue_id: int, default_env: str | None, limit: int) -> dict[str, Any]:
    meta = item.meta
    if item.raw is not None and len(item.raw) <= limit:
        data = item.raw.decode("utf-8", "replace")
    else:
        data = stored_json(item.event(), limit)
    return _clean(
        {
            "project_id": item.project_id,
            "event_id": item.event_id,
            "issue_id": issue_id,
            "ts": item.ts,
            "received_at": item.received_at,
            "level": meta["level"],
            "environment": meta["environment"] or default_env,
            "release": meta["release"],
            "server_name": meta["server_name"],
            "transaction": meta["transaction"],
            "message": meta["message"],
            "data_json": data,
        }
    )


_UPSERTS: dict[str, Any] = {}


def _upsert(dialect: str) -> Any:
    """The dialect's "insert or add to n" of an hour row (None: no upsert we know of)."""
    if dialect not in _UPSERTS:
        table = t.error_issue_hours
        stmt: Any = None
        if dialect in ("sqlite", "postgresql"):
            ins = (sqlite if dialect == "sqlite" else postgresql).insert(table)
            stmt = ins.on_conflict_do_update(
                index_elements=[table.c.issue_id, table.c.hour],
                set_={"n": table.c.n + ins.excluded.n},
            )
        elif dialect in ("mysql", "mariadb"):
            ins = mysql.insert(table)
            stmt = ins.on_duplicate_key_update(n=table.c.n + ins.inserted.n)
        _UPSERTS[dialect] = stmt
    return _UPSERTS[dialect]


def add_hours(conn: Connection, hours: dict[tuple[int, int], int]) -> None:
    """Add to the events-per-issue-per-hour counts: one upsert statement for the batch."""
    if not hours:
        return
    rows = [{"issue_id": i, "hour": h, "n": k} for (i, h), k in hours.items()]
    table = t.error_issue_hours
    upsert = _upsert(conn.dialect.name)
    if upsert is not None:
        conn.execute(upsert, rows)
        return
    # any other backend: read which exist, then update those and insert the rest
    c = table.c
    have: set[tuple[int, int]] = set()
    for chunk in _chunks(sorted({r["issue_id"] for r in rows})):
        query = select(c.issue_id, c.hour).where(c.issue_id.in_(chunk))
        have.update((r.issue_id, r.hour) for r in conn.execute(query))
    old = [r for r in rows if (r["issue_id"], r["hour"]) in have]
    new = [r for r in rows if (r["issue_id"], r["hour"]) not in have]
    if old:
        conn.execute(
            update(table)
            .where(c.issue_id == bindparam("b_issue"), c.hour == bindparam("b_hour"))
            .values(n=c.n + bindparam("b_n")),
            [{"b_issue": r["issue_id"], "b_hour": r["hour"], "b_n": r["n"]} for r in old],
        )
    if new:
        conn.execute(insert(table), new)


# -- what an event keeps ---------------------------------------------------------------------

_ESSENTIAL = (
    "event_id", "timestamp", "level", "platform", "logger", "message", "logentry", "exception",
    "tags", "environment", "release", "server_name", "transaction", "fingerprint", "sdk",
)  # fmt: skip


def _shrink(value: Any, max_str: int, max_list: int, depth: int = 0) -> Any:
    if isinstance(value, str):
        return value if len(value) <= max_str else value[:max_str] + "…"
    if depth > 12:
        return None
    if isinstance(value, dict):
        return {
            k: _shrink(v, max_str, max_list, depth + 1)
            for k, v in value.items()
            if k != "vars" or max_str > 512
        }
    if isinstance(value, list):
        # the end of a list is what matters: the innermost frames, the latest breadcrumbs
        kept = value[-max_list:]
        return [_shrink(v, max_str, max_list, depth + 1) for v in kept]
    return value


def stored_json(event: dict[str, Any], limit: int = STORED_LIMIT) -> str:
    """The event as JSON in at most `limit` bytes: whole when it fits, else cut down in steps
    (breadcrumbs, frame variables and long strings first, then all but the essential keys)."""
    data = orjson.dumps(event)
    if len(data) <= limit:
        return data.decode()
    for max_str, max_list in ((2048, 100), (512, 50), (200, 30), (100, 20)):
        smaller = _shrink(event, max_str, max_list)
        smaller["_trimmed"] = True
        data = orjson.dumps(smaller)
        if len(data) <= limit:
            return data.decode()
    core = {k: event[k] for k in _ESSENTIAL if k in event}
    core = _shrink(core, 100, 10)
    core["_trimmed"] = True
    data = orjson.dumps(core)
    if len(data) <= limit:
        return data.decode()
    minimal = {"event_id": event.get("event_id"), "_trimmed": True}
    minimal["title"] = n.title(event)[:300]
    return orjson.dumps(minimal).decode()


# -- retention -------------------------------------------------------------------------------


def apply_retention(store: Any, now: float, keep_events: float, keep_hours: float) -> int:
    """Delete events older than `keep_events` and hourly counts older than `keep_hours`, in
    chunks, each its own transaction (a long delete must not hold the drainer up)."""
    c = t.error_events.c
    cutoff = now - keep_events
    removed = 0
    while True:
        with store.begin() as conn:
            ids = [
                r[0] for r in conn.execute(select(c.id).where(c.ts < cutoff).limit(ID_CHUNK * 4))
            ]
            if ids:
                conn.execute(delete(t.error_events).where(c.id.in_(ids)))
        removed += len(ids)
        if len(ids) < ID_CHUNK * 4:
            break
    hour_cutoff = int((now - keep_hours) // 3600)
    with store.begin() as conn:
        conn.execute(delete(t.error_issue_hours).where(t.error_issue_hours.c.hour < hour_cutoff))
    return removed
