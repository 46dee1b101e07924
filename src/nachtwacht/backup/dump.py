"""The portable logical format: every table as gzip'd JSON lines, written in one snapshot.

Each line of `tables/<table>.jsonl.gz` is a JSON array of one row's values, in the order of
the manifest's `columns` for that table. JSON keeps the types the tables use apart: integers,
floats (written as the shortest text that reads back to the same double, so exactly), booleans,
null and text. Rows are streamed in chunks of CHUNK_ROWS both ways, so memory stays bounded
however large `results` grows.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from nachtwacht.backup.integrity import backend_of, read_revision
from nachtwacht.backup.manifest import TABLES_DIR, BackupError, table_file
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store

CHUNK_ROWS = 1000
Batch = list[dict[str, Any]]


def dump_logical(store: Store, directory: Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """Write every table of store/tables.py; returns (schema revision, manifest `tables`).

    All tables are read in one REPEATABLE READ, read-only transaction: PostgreSQL and InnoDB
    give it one snapshot (SQLite: one WAL read transaction), so the backup is consistent while
    the engine keeps writing. SQLite stores normally use the online backup instead; the
    logical form of one is there for `backup create --logical`.
    """
    backend = backend_of(store.engine)
    (directory / TABLES_DIR).mkdir(parents=True, exist_ok=True)
    tables: dict[str, dict[str, Any]] = {}
    with store.connect() as base:
        conn = (
            base
            if backend == "sqlite"
            else base.execution_options(isolation_level="REPEATABLE READ")
        )
        with conn.begin():
            if backend == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            elif backend == "mariadb":
                # the snapshot starts now, not at the first read of some InnoDB table
                conn.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            else:
                # pysqlite starts no transaction for SELECTs; BEGIN pins one WAL snapshot
                conn.exec_driver_sql("BEGIN")
            revision = read_revision(conn)
            if revision is None:
                raise BackupError("the store has no schema version: it was never migrated")
            for table in t.metadata.sorted_tables:
                columns = [c.name for c in table.columns]
                rows = _dump_table(conn, table.name, directory / table_file(table.name))
                tables[table.name] = {"rows": rows, "columns": columns}
    return revision, tables


def _dump_table(conn: Connection, name: str, path: Path) -> int:
    table = t.metadata.tables[name]
    query = select(table).order_by(*table.primary_key.columns)
    rows = 0
    # stream_results: a server-side cursor on PostgreSQL, an unbuffered one on MariaDB
    result = conn.execution_options(stream_results=True, yield_per=CHUNK_ROWS).execute(query)
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=6) as fh:
        for part in result.partitions():
            lines = []
            for row in part:
                try:
                    lines.append(json.dumps(list(row), ensure_ascii=False, separators=(",", ":")))
                except TypeError as exc:
                    raise BackupError(f"{name}: a value JSON cannot hold: {exc}") from None
            fh.write("\n".join(lines) + "\n")
            rows += len(part)
    return rows


def read_table(directory: Path, name: str, columns: list[str]) -> Iterator[Batch]:
    """The rows of one dumped table as dicts, CHUNK_ROWS at a time; BackupError if unreadable."""
    rel = table_file(name)
    batch: Batch = []
    try:
        with gzip.open(directory / rel, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                try:
                    values = json.loads(line)
                except ValueError as exc:
                    raise BackupError(f"{rel}:{lineno}: not a JSON line: {exc}") from None
                if not isinstance(values, list) or len(values) != len(columns):
                    raise BackupError(f"{rel}:{lineno}: expected an array of {len(columns)} values")
                batch.append(dict(zip(columns, values, strict=True)))
                if len(batch) >= CHUNK_ROWS:
                    yield batch
                    batch = []
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise BackupError(f"{rel} cannot be read: {exc}") from None
    if batch:
        yield batch
