"""Engine factory and the `Store` handle every domain service receives."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    create_engine,
    event,
    select,
    update,
)
from sqlalchemy import text as sql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from nachtwacht.store import tables as t


class StoreError(Exception):
    """The store cannot be reached or used; the message says which and why."""


def inserted_id(result: CursorResult[Any]) -> int:
    """The id of the row a single-row insert just made.

    SQLAlchemy types `inserted_primary_key` as optional (it is None for statements that are
    not a single-row insert); every caller here runs one, so a missing key is a store fault.
    """
    key = result.inserted_primary_key
    if key is None:
        raise StoreError("the insert returned no primary key")
    return int(key[0])


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets `nachtwacht status` read while the engine writes; NORMAL is durable
            # across a process kill (only an OS crash can lose the last commits).
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = 10
    elif parsed.get_backend_name() == "mysql":
        connect_args["connect_timeout"] = 10
        if "charset" not in parsed.query:
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return create_engine(parsed, pool_pre_ping=True, pool_size=5, connect_args=connect_args)


class Store:
    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or make_engine(url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def describe(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"store {self.describe()}: {_reason(exc)}") from exc

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"store {self.describe()}: {_reason(exc)}") from exc

    def migrate(self) -> None:
        try:
            # a store that is down fails here, once, rather than again inside Alembic
            with self.engine.connect() as conn:
                if _at_head(conn):
                    return
            from nachtwacht.store.migrate import upgrade

            upgrade(self.engine)
        except SQLAlchemyError as exc:
            raise StoreError(f"store {self.describe()}: {_reason(exc)}") from exc

    def dispose(self) -> None:
        self.engine.dispose()

    # -- small key/value for watermarks and offsets ---------------------------------------

    def get_meta(self, conn: Connection, key: str) -> Any:
        row = conn.execute(select(t.engine_meta.c.value).where(t.engine_meta.c.key == key)).first()
        return None if row is None else json.loads(row[0])

    def set_meta(self, conn: Connection, key: str, value: Any, now: float) -> None:
        payload = json.dumps(value)
        changed = conn.execute(
            update(t.engine_meta)
            .where(t.engine_meta.c.key == key)
            .values(value=payload, updated_at=now)
        ).rowcount
        if not changed:
            conn.execute(t.engine_meta.insert().values(key=key, value=payload, updated_at=now))


def _reason(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


META_KEY_LEN = 120  # the width of engine_meta.key


_REVISION = re.compile(r'^(down_)?revision\b[^=\n]*=\s*(?:"([^"\n]*)"|None)', re.MULTILINE)


@functools.cache
def head_revisions() -> frozenset[str]:
    """The migrations' head, read from their `revision` and `down_revision` lines without
    Alembic; a merge's tuple of down revisions is not read, so then no set matches and
    `migrate` asks Alembic (tests/test_cli_import_cost.py compares this with Alembic's heads)."""
    revisions: set[str] = set()
    downs: set[str] = set()
    for path in (Path(__file__).parent / "migrations" / "versions").glob("*.py"):
        for match in _REVISION.finditer(path.read_text(encoding="utf-8")):
            if match.group(2) is not None:
                (downs if match.group(1) else revisions).add(match.group(2))
    return frozenset(revisions - downs)


def _at_head(conn: Connection) -> bool:
    """The store records the newest shipped revision: no upgrade to run, so Alembic need not
    load (about 120 ms of every command that reads the store). Anything else (no version
    table yet, an older or unknown revision) goes to Alembic as before."""
    heads = head_revisions()
    try:
        found = {row[0] for row in conn.execute(sql("SELECT version_num FROM alembic_version"))}
    except SQLAlchemyError:
        return False  # a new store: no version table yet
    return bool(heads) and found == heads


def meta_key(prefix: str, name: str) -> str:
    """`prefix + name`, or `prefix + sha256(name)` when that would not fit engine_meta.key."""
    key = prefix + name
    if len(key) <= META_KEY_LEN:
        return key
    return prefix + hashlib.sha256(name.encode()).hexdigest()[: META_KEY_LEN - len(prefix)]
