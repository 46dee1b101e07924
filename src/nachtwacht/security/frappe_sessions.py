"""A Frappe site's active sessions (`tabSessions`): list them, and end them as Frappe does.

Frappe keeps a session in two places: a row of `tabSessions` in the site's database (sid,
user, lastupdate, device, the session data as a Python dict literal) and, for speed, the hash
`<db_name>|session` in the bench's Redis cache (field: the sid), next to
`<db_name>|last_db_session_update`. Its own `delete_session` deletes the row, commits, and
then deletes both hash fields (frappe/sessions.py); a session left in the cache would keep
working until the cache forgets it, so ending one here does the same, and clears the cache
before the delete as well: a process that dies between the commit and the cache would leave
sessions working that a second run can no longer find (their rows are gone). Frappe also writes an
Activity Log "logged out" entry; that is its ORM's work and is not done here: Nachtwacht's
audit log and the incident's timeline record the end instead.

The site's database and Redis come from the Frappe preset: the bench's
`sites/<site>/site_config.json` and `common_site_config.json` (config/frappe_bench.py), the
bench path and site from `runbooks.vars` (`bench_path`, `frappe_site`), or given outright.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, create_engine, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from nachtwacht.auth.audit import audit
from nachtwacht.config.frappe_bench import read_bench
from nachtwacht.incidents.service import add_event, require
from nachtwacht.problems import Problem

ADMINISTRATOR = "Administrator"
DEFAULT_BENCH = "/home/frappe/frappe-bench"
DEFAULT_LIMIT = 200
MAX_LIMIT = 10_000
# the sids deleted per statement and per HDEL
BATCH = 500
# Frappe's session data is `str(dict)`: the address the session started from is in it
_SESSION_IP = re.compile(r"""['"]session_ip['"]\s*:\s*['"]([^'"]{1,64})['"]""")
_COLUMNS = ("user", "sid", "sessiondata", "ipaddress", "lastupdate", "device", "status")
CONNECT_TIMEOUT = 10


class SessionsError(Problem):
    """The site cannot be found or reached, or the request is not valid."""


@dataclass(frozen=True)
class FrappeSite:
    """Where a site's sessions live: its database and the bench's cache."""

    name: str
    db_url: str
    db_name: str  # Frappe prefixes its cache keys with it
    redis_url: str | None  # None: no cache configured, only the rows are deleted


@dataclass(frozen=True)
class FrappeSession:
    sid_prefix: str  # enough to tell sessions apart; the sid itself logs in as the user
    user: str
    ip: str | None
    last_update: str | None  # as Frappe stored it: the site's local time, no offset
    device: str | None
    status: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "sid_prefix": self.sid_prefix,
            "user": self.user,
            "ip": self.ip,
            "last_update": self.last_update,
            "device": self.device,
            "status": self.status,
        }


@dataclass
class Ended:
    """What `end_sessions` did: rows deleted per user, cache fields deleted."""

    site: str
    scope: str  # "user:<name>" or "all-but-Administrator"
    users: dict[str, int] = field(default_factory=dict)
    cache_fields: int = 0
    cache_error: str | None = None  # the rows are gone; the cache could not be cleared

    @property
    def sessions(self) -> int:
        return sum(self.users.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "scope": self.scope,
            "sessions": self.sessions,
            "users": dict(self.users),
            "cache_fields_deleted": self.cache_fields,
            "cache_error": self.cache_error,
        }


def resolve_site(
    settings: Any,
    site: str | None = None,
    *,
    db_url: str | None = None,
    redis_url: str | None = None,
    bench_path: str | None = None,
) -> FrappeSite:
    """The site from the Frappe preset's bench, with any part given outright taking over."""
    variables = dict(getattr(getattr(settings, "runbooks", None), "vars", {}) or {})
    name = site or variables.get("frappe_site") or getattr(settings, "site", None) or ""
    if not name:
        raise SessionsError("no site: give --site", field="site")
    if db_url is not None:
        parsed = _parse_url(db_url)
        return FrappeSite(name, db_url, parsed.database or name, redis_url)
    bench = Path(bench_path or variables.get("bench_path") or DEFAULT_BENCH)
    facts = read_bench(name, bench)
    if facts.db_name == "EDIT_DB_NAME":
        activity = _activity_url(settings)
        if activity is not None:  # the preset's Activity Log source reads the same database
            return FrappeSite(name, activity, _parse_url(activity).database or name, redis_url)
        raise SessionsError(
            f"cannot read {bench / 'sites' / name / 'site_config.json'}: give the bench with "
            "runbooks.vars.bench_path, or the database with --db-url",
            field="site",
        )
    cache = redis_url
    if cache is None and not any("redis_cache" in edit for edit in facts.edits):
        cache = facts.redis_cache
    return FrappeSite(name, facts.db_url, facts.db_name, cache)


def _activity_url(settings: Any) -> str | None:
    """The database URL of a `frappe_activity` security source, if the config has one."""
    for source in getattr(getattr(settings, "security", None), "sources", None) or ():
        url = getattr(source, "url", "")
        if getattr(source, "kind", None) == "frappe_activity" and url:
            return str(url)
    return None


def _parse_url(url: str) -> Any:
    try:
        return make_url(url)
    except Exception:  # noqa: BLE001 - any malformed URL is the same mistake to the user
        raise SessionsError("not a database URL", field="db_url") from None


def _engine(site: FrappeSite) -> Engine:
    parsed = _parse_url(site.db_url)
    args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT}
    if parsed.get_backend_name() == "mysql" and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    try:
        return create_engine(parsed, poolclass=NullPool, connect_args=args)
    except Exception as exc:  # noqa: BLE001 - a missing driver or a bad option: one line
        raise SessionsError(f"cannot use {parsed.drivername}: {exc}", field="db_url") from None


def _quote(engine: Engine, name: str) -> str:
    return engine.dialect.identifier_preparer.quote(name)


def _present(conn: Any) -> set[str]:
    try:
        return {c["name"] for c in inspect(conn).get_columns("tabSessions")}
    except SQLAlchemyError:
        raise SessionsError("the site's database has no tabSessions table") from None


def list_sessions(site: FrappeSite, limit: int = DEFAULT_LIMIT) -> list[FrappeSession]:
    """The site's sessions, most recently active first (Frappe's own order)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise SessionsError(f"limit must be 1 to {MAX_LIMIT}", field="limit")
    engine = _engine(site)
    try:
        with engine.connect() as conn:
            present = _present(conn)
            columns = [c for c in _COLUMNS if c in present]
            if not {"user", "sid"} <= present:
                raise SessionsError("tabSessions has no user or sid column")
            q = _quote(engine, "tabSessions")
            order = (
                f" ORDER BY {_quote(engine, 'lastupdate')} DESC" if "lastupdate" in present else ""
            )
            select = ", ".join(_quote(engine, c) for c in columns)
            rows = conn.execute(
                text(f"SELECT {select} FROM {q}{order} LIMIT :limit"), {"limit": limit}
            ).mappings()
            return [_session(row) for row in rows]
    except SQLAlchemyError as exc:
        raise SessionsError(f"the site's database: {_reason(exc)}", kind="conflict") from None
    finally:
        engine.dispose()


def _session(row: Any) -> FrappeSession:
    ip = (row.get("ipaddress") or "").strip() or None
    if ip is None:
        found = _SESSION_IP.search(str(row.get("sessiondata") or ""))
        ip = found.group(1) if found else None
    last = row.get("lastupdate")
    if isinstance(last, datetime):
        last = last.isoformat(sep=" ", timespec="seconds")
    return FrappeSession(
        sid_prefix=str(row.get("sid") or "")[:8],
        user=str(row.get("user") or ""),
        ip=ip,
        last_update=None if last is None else str(last),
        device=row.get("device"),
        status=row.get("status"),
    )


def end_sessions(
    site: FrappeSite, *, user: str | None = None, all_but_administrator: bool = False
) -> Ended:
    """Delete one user's sessions, or everyone's but Administrator's, then their cache entries.

    The cache is cleared of the sessions first; the rows go in one transaction; the cache
    again after the commit, as Frappe does. A cache that
    cannot be reached leaves `cache_error` set: those sessions work until the cache forgets
    them (or `bench --site SITE clear-cache`), so the caller must say so.
    """
    if (user is None) == (not all_but_administrator):
        raise SessionsError("give either a user or all-but-Administrator", field="user")
    if user is not None and not 0 < len(user) <= 255:
        raise SessionsError("a user name is 1 to 255 characters", field="user")
    scope = f"user:{user}" if user is not None else f"all-but-{ADMINISTRATOR}"
    ended = Ended(site.name, scope)
    engine = _engine(site)
    q = _quote(engine, "tabSessions")
    u, sid = _quote(engine, "user"), _quote(engine, "sid")
    where = f"{u} = :user" if user is not None else f"({u} IS NULL OR {u} <> :user)"
    who = {"user": user if user is not None else ADMINISTRATOR}
    early = 0
    try:
        if site.redis_url:
            # first the cache, outside the transaction (no row lock waits on Redis): a kill
            # after the commit below then leaves no ended session working from the cache
            with engine.connect() as conn:
                _present(conn)
                seen = [
                    str(x)
                    for x in conn.execute(
                        text(f"SELECT {sid} FROM {q} WHERE {where}"), who
                    ).scalars()
                    if x is not None
                ]
            try:
                early = clear_cache(site, seen) if seen else 0
            except Exception:  # noqa: BLE001 - the clear after the commit reports the failure
                early = 0
        with engine.begin() as conn:
            _present(conn)
            # FOR UPDATE: a session that logs in meanwhile is either ended too or not seen
            rows = conn.execute(
                text(f"SELECT {sid}, {u} FROM {q} WHERE {where} FOR UPDATE"), who
            ).all()
            sids = [str(r[0]) for r in rows if r[0] is not None]
            delete = text(f"DELETE FROM {q} WHERE {sid} IN :sids").bindparams(
                bindparam("sids", expanding=True)
            )
            for start in range(0, len(sids), BATCH):
                conn.execute(delete, {"sids": sids[start : start + BATCH]})
            ended.users = dict(Counter(str(r[1] or "") for r in rows if r[0] is not None))
    except SQLAlchemyError as exc:
        raise SessionsError(f"the site's database: {_reason(exc)}", kind="conflict") from None
    finally:
        engine.dispose()
    if sids and not site.redis_url:
        ended.cache_error = "no Redis cache is known for the site (give --redis-url)"
    elif sids:
        try:
            # again after the commit: a request may have cached a session meanwhile
            ended.cache_fields = early + clear_cache(site, sids)
        except Exception as exc:  # noqa: BLE001 - the rows are gone: report, do not raise
            ended.cache_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ended


def cache_keys(site: FrappeSite) -> tuple[str, str]:
    """The cache hashes a session lives in: Frappe's RedisWrapper.make_key (`db_name|key`)."""
    return f"{site.db_name}|session", f"{site.db_name}|last_db_session_update"


def clear_cache(site: FrappeSite, sids: list[str]) -> int:
    """HDEL the sids from the site's session hashes; returns how many fields were deleted."""
    import redis

    assert site.redis_url is not None
    client = redis.Redis.from_url(
        site.redis_url, socket_timeout=CONNECT_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT
    )
    try:
        deleted = 0
        for key in cache_keys(site):
            for start in range(0, len(sids), BATCH):
                deleted += int(client.hdel(key, *sids[start : start + BATCH]))
        return deleted
    finally:
        client.close()


def describe(ended: Ended) -> str:
    """One line: what was done (for the CLI, the audit log and the timeline)."""
    who = (
        ended.scope.removeprefix("user:")
        if ended.scope.startswith("user:")
        else f"every user but {ADMINISTRATOR}"
    )
    users = ", ".join(f"{name} ({n})" for name, n in sorted(ended.users.items()))
    text_ = f"ended {ended.sessions} session(s) of {who} on {ended.site}"
    if users:
        text_ += f": {users}"
    if ended.cache_error:
        text_ += (
            f"; the cache was NOT cleared ({ended.cache_error}): run `bench --site "
            f"{ended.site} clear-cache`"
        )
    return text_


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    lines = str(orig if orig is not None else exc).strip().splitlines()
    return lines[0] if lines else exc.__class__.__name__


def check_incident(conn: Any, incident_id: int | None) -> None:
    """Refuse an unknown incident before anything is ended."""
    if incident_id is not None:
        require(conn, incident_id)


def record(conn: Any, ended: Ended, actor: str, now: float, incident_id: int | None = None) -> None:
    """Audit what `end_sessions` did and, with an incident, put it on its timeline."""
    detail = ended.as_dict()
    audit(conn, actor, "frappe.sessions.end", f"{ended.site} {ended.scope}", detail, None, now)
    if incident_id is not None:
        add_event(conn, incident_id, now, "security", actor, describe(ended), detail)
