"""Projects: the applications that report errors, each with a DSN key.

The DSN an SDK takes is `http://<public key>@<host:port>/<project id>`; the public key (32 hex
digits) identifies the project, it is not a secret in Sentry's model (browser SDKs ship it),
but a key only lets its holder send events into its own project.

The ingestion endpoints never query the store per request: `KeyCache` keeps the keys in memory
and reloads them every `ttl` seconds in the background. An unknown key waits for a reload
begun after it arrived, shared with every other request waiting and at most one a second: a
project just added by the CLI is accepted from its first event, and a flood of wrong keys
costs one query per second at most. While the store is down it keeps answering from what it
has; a key it does not have then gets a 503, not a 401.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select

from nachtwacht.auth.audit import audit
from nachtwacht.clock import Clock, SystemClock, iso
from nachtwacht.problems import Problem
from nachtwacht.store import tables as t
from nachtwacht.store.db import StoreError, inserted_id

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")
CHUNK = 5000


class ProjectError(Problem, ValueError):
    """A request about error projects that cannot be done; `field` names the culprit."""


def base_url(settings: Any) -> str:
    """Where SDKs reach this server: `errors.public_url`, else `server.host:port`."""
    public = getattr(settings.errors, "public_url", None)
    if public:
        return str(public).rstrip("/")
    host = settings.server.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.server.port}"


def dsn(base: str, public_key: str, project_id: int) -> str:
    scheme, _, rest = base.rstrip("/").partition("://")
    return f"{scheme}://{public_key}@{rest}/{project_id}"


def view(row: Any, base: str, events: int = 0, issues: int = 0) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "environment": row["environment"],
        "public_key": row["public_key"],
        "dsn": dsn(base, row["public_key"], row["id"]),
        "created_at": iso(row["created_at"]),
        "created_by": row["created_by"],
        "disabled": bool(row["disabled"]),
        "events": events,
        "issues": issues,
    }


def by_name(conn: Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(select(t.error_projects).where(t.error_projects.c.name == name)).first()
    return dict(row._mapping) if row is not None else None


def add_project(
    conn: Connection,
    name: str,
    now: float,
    *,
    actor: str,
    base: str,
    environment: str | None = None,
    ip: str | None = None,
) -> dict[str, Any]:
    if not NAME.match(name):
        raise ProjectError(
            "a project name is 1-120 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit",
            field="name",
        )
    if environment is not None and not (0 < len(environment) <= 64 and environment.isprintable()):
        raise ProjectError("environment must be 1-64 printable characters", field="environment")
    if by_name(conn, name) is not None:
        raise ProjectError(f"a project named '{name}' exists", "name", kind="conflict")
    key = secrets.token_hex(16)
    project_id = inserted_id(
        conn.execute(
            insert(t.error_projects).values(
                name=name,
                public_key=key,
                environment=environment,
                created_by=actor[:120],
                created_at=now,
                disabled=False,
            )
        )
    )
    audit(conn, actor, "project.add", f"project:{project_id}", {"name": name}, ip, now)
    row = conn.execute(select(t.error_projects).where(t.error_projects.c.id == project_id)).one()
    return view(row._mapping, base)


def list_projects(conn: Connection, base: str) -> list[dict[str, Any]]:
    i = t.error_issues.c
    totals = {
        r.project_id: (int(r.events or 0), int(r.issues or 0))
        for r in conn.execute(
            select(
                i.project_id, func.sum(i.count).label("events"), func.count().label("issues")
            ).group_by(i.project_id)
        )
    }
    rows = conn.execute(select(t.error_projects).order_by(t.error_projects.c.name)).mappings()
    return [view(r, base, *totals.get(r["id"], (0, 0))) for r in rows]


def remove_project(
    conn: Connection, name: str, now: float, *, actor: str, ip: str | None = None
) -> dict[str, Any]:
    """Delete a project with its issues, events and hourly counts."""
    row = by_name(conn, name)
    if row is None:
        raise ProjectError(f"no project named '{name}'", "name", kind="not_found")
    issue_ids = [
        r[0]
        for r in conn.execute(
            select(t.error_issues.c.id).where(t.error_issues.c.project_id == row["id"])
        )
    ]
    for start in range(0, len(issue_ids), CHUNK):
        chunk = issue_ids[start : start + CHUNK]
        conn.execute(delete(t.error_issue_hours).where(t.error_issue_hours.c.issue_id.in_(chunk)))
    events = conn.execute(
        delete(t.error_events).where(t.error_events.c.project_id == row["id"])
    ).rowcount
    conn.execute(delete(t.error_issues).where(t.error_issues.c.project_id == row["id"]))
    conn.execute(delete(t.error_projects).where(t.error_projects.c.id == row["id"]))
    detail = {"name": name, "issues": len(issue_ids), "events": events}
    audit(conn, actor, "project.remove", f"project:{row['id']}", detail, ip, now)
    return {"id": row["id"], **detail}


# -- the key cache of the ingestion endpoints ------------------------------------------------


@dataclass(frozen=True)
class ProjectKey:
    project_id: int
    name: str
    disabled: bool


@dataclass
class KeyCache:
    """The project keys in memory, loaded by `load` (in a thread) and shared by all requests.

    Loads are numbered; at most one runs (or waits for its turn) at a time, and every request
    that needs one joins it. A miss is final only when a load begun after the request arrived
    has not found the key: the CLI adds projects from another process without telling the
    server. Those loads are paced to one per `miss_interval` of the clock, so a flood of
    unknown keys costs one query per interval, not one per request.
    """

    load: Callable[[], list[tuple[str, int, str, bool]]]  # (public_key, id, name, disabled)
    clock: Clock = field(default_factory=SystemClock)
    ttl: float = 10.0
    miss_interval: float = 1.0
    keys: dict[str, ProjectKey] = field(default_factory=dict)
    names: dict[str, ProjectKey] = field(default_factory=dict)
    loaded_at: float | None = None  # clock time the keys in memory were read; None: never
    begun: int = 0  # loads begun so far (the number of the newest)
    _read: int = 0  # the number of the load whose keys are in memory
    _invalid: int = 0  # loads up to this number may not show a change this process made
    _began_at: float | None = None
    _error: StoreError | None = None  # why the newest load failed; None when it did not
    _flight: asyncio.Task[StoreError | None] | None = None

    async def _load(self, pause: float) -> StoreError | None:
        """One load; a failure is returned to the waiters (a background load has none)."""
        if pause > 0:
            await self.clock.sleep(pause)
        self.begun += 1
        number, self._began_at = self.begun, self.clock.now()
        try:
            rows = await asyncio.to_thread(self.load)
        except StoreError as exc:
            self._error = exc
            return exc
        keys, names = {}, {}
        for key, project_id, name, disabled in rows:
            entry = ProjectKey(project_id, name, bool(disabled))
            keys[key] = entry
            names[name] = entry
        self.keys, self.names = keys, names
        self._read, self.loaded_at, self._error = number, self._began_at, None
        return None

    def _idle(self) -> bool:
        return self._flight is None or self._flight.done()

    def _wait_before_next(self) -> float | None:
        """How long the next load must wait to keep the pace; None: it may start now."""
        if self._began_at is None:
            return None
        since = self.clock.now() - self._began_at
        # a wall clock set back must not hold the next load for as long
        return self.miss_interval - since if 0 <= since < self.miss_interval else None

    async def _next(self, paced: bool) -> None:
        """Wait for the load running or due, or start one; StoreError if it failed."""
        if self._idle():
            wait = self._wait_before_next()
            if wait is not None and self._error is not None:
                # the store failed a moment ago: asking it again per request would not help
                raise StoreError(str(self._error))
            self._flight = asyncio.create_task(self._load(wait if paced and wait else 0.0))
        assert self._flight is not None
        failed = await asyncio.shield(self._flight)
        if failed is not None:
            # a new exception per waiter: raising one instance again and again grows its traceback
            raise StoreError(str(failed))

    async def _ensure(self) -> None:
        """Loaded since the last `invalidate`; refreshed in the background after `ttl`."""
        while self._read <= self._invalid:
            await self._next(paced=False)
        assert self.loaded_at is not None
        since = self.clock.now() - self.loaded_at
        if self._idle() and not 0 <= since <= self.ttl:
            self._flight = asyncio.create_task(self._load(0.0))

    async def _get(self, table: str, wanted: str) -> ProjectKey | None:
        arrived = self.begun  # a load numbered above this began after the request arrived
        await self._ensure()
        while (entry := getattr(self, table).get(wanted)) is None and self._read <= arrived:
            await self._next(paced=True)
        return entry

    async def by_key(self, key: str) -> ProjectKey | None:
        return await self._get("keys", key)

    async def by_name(self, name: str) -> ProjectKey | None:
        return await self._get("names", name)

    def invalidate(self) -> None:
        """This process changed the projects: the next lookup waits for a load begun after."""
        self._invalid = self.begun


def key_loader(store: Any) -> Callable[[], list[tuple[str, int, str, bool]]]:
    def load() -> list[tuple[str, int, str, bool]]:
        p = t.error_projects.c
        with store.connect() as conn:
            return [
                (r.public_key, r.id, r.name, bool(r.disabled))
                for r in conn.execute(select(p.public_key, p.id, p.name, p.disabled))
            ]

    return load
