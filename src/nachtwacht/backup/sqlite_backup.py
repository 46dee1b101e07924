"""SQLite backups: a copy made with SQLite's online backup API, and reading one back.

`Connection.backup` with the default `pages=-1` copies the whole database in one step, that is
inside one read transaction: the copy is one consistent snapshot. In WAL mode (the store's
journal mode) a reader never blocks a writer, so a running `serve` keeps writing meanwhile.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from nachtwacht.backup.dump import CHUNK_ROWS, Batch
from nachtwacht.backup.integrity import read_revision
from nachtwacht.backup.manifest import SQLITE_FILE, BackupError
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store


def sqlite_path(store: Store) -> Path:
    database = store.engine.url.database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite store cannot be backed up")
    return Path(database)


def backup_sqlite(store: Store, directory: Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """Copy the store into `directory/nachtwacht.db`; returns (schema revision, tables)."""
    source_path = sqlite_path(store)
    if not source_path.is_file():
        raise BackupError(f"the SQLite store {source_path} does not exist")
    target = directory / SQLITE_FILE
    try:
        with (
            closing(sqlite3.connect(source_path, timeout=30)) as source,
            closing(sqlite3.connect(target)) as copy,
        ):
            source.execute("PRAGMA busy_timeout=30000")
            source.backup(copy)
            # a rollback journal makes the copy one self-contained file that can be opened
            # read-only (a WAL database needs its -shm file beside it)
            copy.execute("PRAGMA journal_mode=DELETE")
            copy.commit()
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite online backup of {source_path} failed: {exc}") from None
    with readonly(target) as engine:
        revision, tables = describe(engine)
    return revision, tables


@contextmanager
def readonly(path: Path) -> Iterator[Engine]:
    """A SQLAlchemy engine on a SQLite file opened read-only: reading never changes its hash."""
    if not path.is_file():
        raise BackupError(f"{path} is missing")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, check_same_thread=False)

    engine = create_engine("sqlite://", creator=connect, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


def describe(engine: Engine) -> tuple[str, dict[str, dict[str, Any]]]:
    """The schema revision and {table: {rows, columns}} of a SQLite backup file."""
    try:
        with engine.connect() as conn:
            revision = read_revision(conn)
            if revision is None:
                raise BackupError("the SQLite file has no schema version: it was never migrated")
            tables = {
                table.name: {
                    "rows": int(conn.execute(select(func.count()).select_from(table)).scalar_one()),
                    "columns": [c.name for c in table.columns],
                }
                for table in t.metadata.sorted_tables
            }
    except (SQLAlchemyError, sqlite3.Error) as exc:
        raise BackupError(f"the SQLite copy cannot be read: {_first_line(exc)}") from None
    return revision, tables


def integrity(engine: Engine) -> list[str]:
    """PRAGMA integrity_check of the copy: empty when it is sound."""
    try:
        with engine.connect() as conn:
            rows = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA integrity_check").all()]
    except (SQLAlchemyError, sqlite3.Error) as exc:
        return [f"{SQLITE_FILE}: {_first_line(exc)}"]
    return [] if rows == ["ok"] else [f"{SQLITE_FILE}: integrity_check: {r}" for r in rows[:5]]


def file_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return read_revision(conn)
    except (SQLAlchemyError, sqlite3.Error) as exc:
        raise BackupError(f"{SQLITE_FILE} cannot be read: {_first_line(exc)}") from None


def read_table(engine: Engine, name: str, columns: list[str]) -> Iterator[Batch]:
    """The rows of one table of the copy as dicts, CHUNK_ROWS at a time, typed by tables.py."""
    table = t.metadata.tables[name]
    try:
        selected = [table.c[c] for c in columns]
    except KeyError as exc:
        raise BackupError(f"{name}: unknown column {exc}") from None
    query = select(*selected).order_by(*table.primary_key.columns)
    try:
        with engine.connect() as conn:
            result = conn.execution_options(yield_per=CHUNK_ROWS).execute(query)
            for part in result.partitions():
                yield [dict(zip(columns, row, strict=True)) for row in part]
    except (SQLAlchemyError, sqlite3.Error) as exc:
        raise BackupError(f"{SQLITE_FILE}: table {name}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    lines = str(orig if orig is not None else exc).strip().splitlines()
    return lines[0] if lines else exc.__class__.__name__
