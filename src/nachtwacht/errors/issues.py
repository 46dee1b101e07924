"""Reading issues and changing their state: what the CLI, the API and the pages share."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson
from sqlalchemy import Connection, Select, String, cast, func, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB

from nachtwacht.auth.audit import audit
from nachtwacht.clock import iso
from nachtwacht.config import limits
from nachtwacht.errors import normalize as n
from nachtwacht.problems import Problem
from nachtwacht.store import paging
from nachtwacht.store import tables as t

STATUSES = ("unresolved", "resolved", "ignored")
SORTS = {"last_seen": "last_seen", "count": "count", "first_seen": "first_seen"}
# the state changes and the statuses they lead to
ACTIONS = {"resolve": "resolved", "ignore": "ignored", "unresolve": "unresolved"}


class IssueError(Problem, ValueError):
    """A request about error issues that cannot be done; `field` names the culprit."""


def _query(
    status: str | None, project_id: int | None, text: str | None, sort: str = "last_seen"
) -> Select:
    i = t.error_issues.c
    query = select(t.error_issues, t.error_projects.c.name.label("project")).join(
        t.error_projects, t.error_projects.c.id == i.project_id
    )
    if status is not None:
        query = query.where(i.status == status)
    if project_id is not None:
        query = query.where(i.project_id == project_id)
    if text:
        query = query.where(
            i.title.icontains(text, autoescape=True)
            | i.culprit.icontains(text, autoescape=True)
            | i.exc_type.icontains(text, autoescape=True)
        )
    column = getattr(i, SORTS.get(sort, "last_seen"))
    return query.order_by(column.desc(), i.id.desc())


def check_filters(status: str | None, sort: str) -> str | None:
    if status in (None, "", "all"):
        status = None
    elif status not in STATUSES:
        raise IssueError(f"status must be one of all, {', '.join(STATUSES)}", field="status")
    if sort not in SORTS:
        raise IssueError(f"sort must be one of {', '.join(SORTS)}", field="sort")
    return status


def project_id_of(conn: Connection, name: str | None) -> int | None:
    if not name:
        return None
    p = t.error_projects.c
    row = conn.execute(select(p.id).where(p.name == name)).first()
    if row is None:
        raise IssueError(f"no project named '{name}'", "project", kind="not_found")
    return int(row[0])


def list_issues(
    conn: Connection,
    *,
    status: str | None = "unresolved",
    project: str | None = None,
    text: str | None = None,
    sort: str = "last_seen",
    limit: int | None = 100,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """(one page of issues, how many match in all)."""
    wanted = check_filters(status, sort)
    # NUL cannot be in a PostgreSQL string; nothing stored contains it anyway
    text = text.replace("\x00", "") if text else None
    project = project.replace("\x00", "") if project else None
    query = _query(wanted, project_id_of(conn, project), text, sort)
    rows = [view(r) for r in conn.execute(paging.window(query, limit, offset)).mappings()]
    return rows, paging.count(conn, query)


def view(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "project": row.get("project"),
        "project_id": row["project_id"],
        "title": row["title"],
        "culprit": row["culprit"],
        "exc_type": row["exc_type"],
        "level": row["level"],
        "category": row["category"],
        "status": row["status"],
        "count": row["count"],
        "first_seen": iso(row["first_seen"]),
        "last_seen": iso(row["last_seen"]),
        "environment": row["environment"],
        "first_release": row["first_release"],
        "last_event_id": row["last_event_id"],
        "resolved_at": iso(row["resolved_at"]),
        "resolved_by": row["resolved_by"],
        "regressed_at": iso(row["regressed_at"]),
        "fingerprint_version": row["fingerprint_version"],
    }


def get_issue(conn: Connection, issue_id: int) -> dict[str, Any]:
    query = _query(None, None, None).where(t.error_issues.c.id == issue_id)
    row = conn.execute(query).mappings().first()
    if row is None:
        raise IssueError(f"no error issue #{issue_id}", "issue_id", kind="not_found")
    return dict(row)


# -- counts over time ------------------------------------------------------------------------


def hourly(
    conn: Connection, issue_ids: list[int], now: float, hours: int = 24
) -> dict[int, list[int]]:
    """Events per hour over the last `hours` hours (oldest first, the current hour last)."""
    last = int(now // 3600)
    first = last - hours + 1
    out: dict[int, list[int]] = {i: [0] * hours for i in issue_ids}
    if not issue_ids:
        return out
    h = t.error_issue_hours.c
    query = select(h.issue_id, h.hour, h.n).where(
        h.issue_id.in_(issue_ids), h.hour >= first, h.hour <= last
    )
    for row in conn.execute(query):
        out[row.issue_id][row.hour - first] += row.n
    return out


def daily(counts: list[int], days: int) -> list[int]:
    """Hourly counts (a multiple of 24, oldest first) summed per 24 h, ending now."""
    return [sum(counts[d * 24 : (d + 1) * 24]) for d in range(days)]


# -- one issue with its latest event ---------------------------------------------------------

# how deep a frame's variables and the user are shown: sentry-sdk sends 5 levels; deeper data
# stored before the door checked depth broke the issue's page and API answer
SHOWN_DEPTH = 16


def _frames(exc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for f in n.frames_of(exc):
        out.append(
            {
                "filename": f.get("filename") or f.get("abs_path"),
                "module": f.get("module"),
                "function": f.get("function"),
                "lineno": f.get("lineno"),
                "in_app": f.get("in_app") is True,
                "context_line": f.get("context_line"),
                "pre_context": [x for x in f.get("pre_context") or [] if isinstance(x, str)],
                "post_context": [x for x in f.get("post_context") or [] if isinstance(x, str)],
                "vars": (
                    limits.clip_depth(f["vars"], SHOWN_DEPTH)
                    if isinstance(f.get("vars"), dict)
                    else None
                ),
            }
        )
    return out


def event_view(row: Any) -> dict[str, Any]:
    try:
        data = orjson.loads(row["data_json"])
    except orjson.JSONDecodeError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    request = data.get("request")
    request = request if isinstance(request, dict) else {}
    sdk = data.get("sdk")
    sdk = sdk if isinstance(sdk, dict) else {}
    return {
        "event_id": row["event_id"],
        "ts": iso(row["ts"]),
        "received_at": iso(row["received_at"]),
        "level": row["level"],
        "environment": row["environment"],
        "release": row["release"],
        "server_name": row["server_name"],
        "transaction": row["transaction"],
        "message": row["message"],
        "platform": data.get("platform"),
        "logger": data.get("logger"),
        "tags": n.tags(data),
        "user": (
            limits.clip_depth(data["user"], SHOWN_DEPTH)
            if isinstance(data.get("user"), dict)
            else None
        ),
        "request": {k: request.get(k) for k in ("method", "url") if request.get(k)},
        "sdk": {k: sdk.get(k) for k in ("name", "version") if sdk.get(k)},
        "exceptions": [
            {
                "type": n.exc_type(exc),
                "value": n.exc_value(exc),
                "module": exc.get("module"),
                "frames": _frames(exc),
            }
            for exc in n.exceptions(data)
        ],
        "trimmed": bool(data.get("_trimmed")),
    }


def latest_event(conn: Connection, issue: dict[str, Any]) -> dict[str, Any] | None:
    e = t.error_events.c
    query = select(t.error_events)
    if issue.get("last_event_id"):
        query = query.where(
            e.project_id == issue["project_id"], e.event_id == issue["last_event_id"]
        )
    else:
        query = query.where(e.issue_id == issue["id"]).order_by(e.ts.desc()).limit(1)
    row = conn.execute(query).mappings().first()
    if row is None and issue.get("last_event_id"):  # that one expired: the newest left
        query = select(t.error_events).where(e.issue_id == issue["id"])
        row = conn.execute(query.order_by(e.ts.desc()).limit(1)).mappings().first()
    return event_view(row) if row is not None else None


# how many of an issue's newest events `users_affected` looks at: one query, whatever the count
USERS_SCAN = 10_000
# what Sentry counts a user by, in this order (its `sentry:user` tag): id, e-mail, username, IP
_USER_KEYS = ("id", "email", "username", "ip_address")


def _user_field(conn: Connection, column: Any, key: str) -> Any:
    """`data_json`'s `user.<key>` as text, in the store's dialect (the column is TEXT)."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return func.jsonb_extract_path_text(cast(column, JSONB), "user", key)
    if dialect == "mysql":
        return func.json_value(column, f"$.user.{key}")
    return cast(func.json_extract(column, f"$.user.{key}"), String)


def users_affected(conn: Connection, issue_id: int, scan: int = USERS_SCAN) -> int:
    """Distinct users among the issue's newest `scan` events, like Sentry's "users" count.

    A user is known by its id, else its e-mail, username or IP address (each kept apart by a
    prefix, so an id "7" and an IP "7" are two users); an event without one counts for none.
    The SDK's "{{auto}}" IP placeholder is not an address.
    """
    e = t.error_events.c
    newest = (
        select(e.data_json)
        .where(e.issue_id == issue_id)
        .order_by(e.ts.desc())
        .limit(scan)
        .subquery()
    )
    parts = []
    for key in _USER_KEYS:
        value = func.nullif(func.nullif(_user_field(conn, newest.c.data_json, key), ""), "{{auto}}")
        parts.append(literal(f"{key}:", String) + value)
    user = func.coalesce(*parts)
    return int(conn.execute(select(func.count(func.distinct(user)))).scalar() or 0)


def detail(conn: Connection, issue_id: int, now: float) -> dict[str, Any]:
    """An issue, its latest event with the stack trace, and its counts over time."""
    issue = get_issue(conn, issue_id)
    hours = hourly(conn, [issue_id], now, 14 * 24)[issue_id]
    e = t.error_events.c
    recent = conn.execute(
        select(e.event_id, e.ts, e.level, e.environment, e.release, e.message)
        .where(e.issue_id == issue_id)
        .order_by(e.ts.desc())
        .limit(20)
    ).mappings()
    return {
        **view(issue),
        "latest_event": latest_event(conn, issue),
        "users_affected": users_affected(conn, issue_id),
        "hours_24h": hours[-24:],
        "days_14d": daily(hours, 14),
        "recent_events": [
            {**dict(r), "ts": iso(r["ts"]), "message": (r["message"] or "")[:300]} for r in recent
        ],
    }


def set_status(
    conn: Connection,
    issue_id: int,
    action: str,
    actor: str,
    now: float,
    ip: str | None = None,
) -> dict[str, Any]:
    """resolve, ignore or unresolve an issue (audited); returns the issue."""
    status = ACTIONS.get(action)
    if status is None:
        raise IssueError(f"action must be one of {', '.join(ACTIONS)}", field="action")
    issue = get_issue(conn, issue_id)
    values: dict[str, Any] = {"status": status}
    if status == "resolved":
        values |= {"resolved_at": now, "resolved_by": actor[:120]}
    if status in ("resolved", "ignored"):
        # the issue's alert, if one fires, is resolved by the errors alert worker (alerting.py)
        values |= {"alert_due": "resolved", "alert_due_at": now}
    elif issue["alert_due"] == "resolved":
        values |= {"alert_due": None, "alert_due_at": None}  # open again before it was done
    conn.execute(update(t.error_issues).where(t.error_issues.c.id == issue_id).values(**values))
    detail = {"from": issue["status"], "to": status, "title": issue["title"][:120]}
    audit(conn, actor, f"error_issue.{action}", f"error_issue:{issue_id}", detail, ip, now)
    return view({**issue, **values})


def trends(conn: Connection, issue_ids: list[int], now: float, hours: int) -> dict[int, list[int]]:
    """Hourly counts for a list of issues; for 14 days and more, summed per day."""
    counts = hourly(conn, issue_ids, now, hours)
    if hours >= 14 * 24:
        return {i: daily(v, hours // 24) for i, v in counts.items()}
    return counts


def by_category(conn: Connection, since: float) -> dict[str, int]:
    """Events per category since `since` (hour precision): for a summary line."""
    i, h = t.error_issues.c, t.error_issue_hours.c
    query = (
        select(i.category, h.n)
        .select_from(t.error_issue_hours.join(t.error_issues, i.id == h.issue_id))
        .where(h.hour >= int(since // 3600))
    )
    out: dict[str, int] = defaultdict(int)
    for row in conn.execute(query):
        out[row.category or "other"] += row.n
    return dict(out)


def last_day(conn: Connection, now: float) -> dict[str, int]:
    """Events and unresolved issues in the last 24 whole hours, and issues first seen in 24 h."""
    h, i = t.error_issue_hours.c, t.error_issues.c
    since = int(now // 3600) - 23
    events, issues = conn.execute(
        select(func.coalesce(func.sum(h.n), 0), func.count(func.distinct(h.issue_id)))
        .select_from(t.error_issue_hours.join(t.error_issues, i.id == h.issue_id))
        .where(h.hour >= since, i.status == "unresolved")
    ).one()
    new = conn.execute(
        select(func.count()).select_from(t.error_issues).where(i.first_seen >= now - 86400)
    ).scalar_one()
    return {"events": int(events), "issues": int(issues), "new": int(new)}
