"""Verify a backup against its manifest, and restore it into a store of any backend.

Restore reads rows from either kind of backup (the SQLite copy opened read-only through
SQLAlchemy, or the JSON lines) and inserts them through SQLAlchemy Core in one transaction of
the target: any error rolls the whole restore back and the store is as it was.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from nachtwacht.backup import dump, sqlite_backup
from nachtwacht.backup.integrity import backend_of, code_head
from nachtwacht.backup.manifest import (
    SQLITE_FILE,
    BackupError,
    Manifest,
    check_files,
    read_manifest,
    table_file,
)
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store, StoreError

Reader = Callable[[str, list[str]], Iterator[dump.Batch]]


@dataclass
class VerifyReport:
    path: Path
    manifest: Manifest | None = None
    problems: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)  # counted in the data

    @property
    def ok(self) -> bool:
        return self.manifest is not None and not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.path.name,
            "ok": self.ok,
            "problems": list(self.problems),
            "rows": sum(self.rows.values()),
            "tables": len(self.rows),
            "schema_version": self.manifest.schema_version if self.manifest else None,
        }


@dataclass
class RestoreReport:
    path: Path
    target: str
    schema_version: str
    rows: dict[str, int]
    deleted: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.path.name,
            "target": self.target,
            "schema_version": self.schema_version,
            "rows": sum(self.rows.values()),
            "tables": len(self.rows),
            "deleted": self.deleted,
        }


def verify_backup(path: Path) -> VerifyReport:
    """Recompute everything the manifest claims: each file's size and SHA-256, the schema
    version and the row count of every table (by reading every row)."""
    report = VerifyReport(path)
    try:
        manifest = read_manifest(path)
    except (BackupError, OSError) as exc:
        report.problems.append(str(exc))
        return report
    report.manifest = manifest
    damaged = check_files(path, manifest)
    report.problems += damaged.values()
    if manifest.kind == "sqlite":
        if SQLITE_FILE not in damaged:
            report.problems += _verify_sqlite(path, manifest, report.rows)
    else:
        for name, meta in sorted(manifest.tables.items()):
            if table_file(name) in damaged:
                continue
            try:
                report.rows[name] = _count_lines(path, name, len(meta["columns"]))
            except BackupError as exc:
                report.problems.append(str(exc))
    for name, meta in sorted(manifest.tables.items()):
        counted = report.rows.get(name)
        if counted is not None and counted != int(meta["rows"]):
            report.problems.append(
                f"table {name}: {counted} rows in the data, the manifest says {meta['rows']}"
            )
    return report


def _verify_sqlite(path: Path, manifest: Manifest, rows: dict[str, int]) -> list[str]:
    problems: list[str] = []
    try:
        with sqlite_backup.readonly(path / SQLITE_FILE) as engine:
            problems += sqlite_backup.integrity(engine)
            if problems:
                return problems
            revision = sqlite_backup.file_revision(engine)
            if revision != manifest.schema_version:
                problems.append(
                    f"{SQLITE_FILE} is at schema {revision}, the manifest says "
                    f"{manifest.schema_version}"
                )
            with engine.connect() as conn:
                quote = conn.dialect.identifier_preparer.quote
                for name in sorted(manifest.tables):
                    # every row is read, not just counted: what restore will read, verify reads
                    result = conn.exec_driver_sql(f"SELECT * FROM {quote(name)}")
                    rows[name] = sum(len(part) for part in result.partitions(dump.CHUNK_ROWS))
    except BackupError as exc:
        problems.append(str(exc))
    except (SQLAlchemyError, sqlite3.Error) as exc:
        problems.append(f"{SQLITE_FILE}: {_reason(exc)}")
    return problems


def _count_lines(path: Path, name: str, width: int) -> int:
    rel = table_file(name)
    count = 0
    try:
        with gzip.open(path / rel, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                try:
                    values = json.loads(line)
                except ValueError:
                    raise BackupError(f"{rel}:{lineno}: not a JSON line") from None
                if not isinstance(values, list) or len(values) != width:
                    raise BackupError(f"{rel}:{lineno}: expected an array of {width} values")
                count += 1
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise BackupError(f"{rel} cannot be read: {exc}") from None
    return count


@contextmanager
def open_rows(path: Path, manifest: Manifest) -> Iterator[Reader]:
    """A reader `(table, columns) -> batches of row dicts` over either kind of backup."""
    if manifest.kind == "logical":
        yield lambda name, columns: dump.read_table(path, name, columns)
        return
    with sqlite_backup.readonly(path / SQLITE_FILE) as engine:
        yield lambda name, columns: sqlite_backup.read_table(engine, name, columns)


def restore_backup(path: Path, store: Store, *, force: bool = False) -> RestoreReport:
    """Replace the store's rows with the backup's, in one transaction; BackupError on refusal.

    Refuses a backup that does not verify, one of another schema version than this code, and
    (unless `force`) a store that holds any row. The target is migrated to the code's head
    first; with `force` the existing rows are deleted in the same transaction as the inserts.
    """
    verified = verify_backup(path)
    if not verified.ok or verified.manifest is None:
        raise BackupError(
            f"backup {path.name} does not verify, nothing was restored: "
            + "; ".join(verified.problems[:3])
        )
    manifest = verified.manifest
    head = code_head()
    if manifest.schema_version != head:
        raise BackupError(
            f"backup {path.name} is at schema {manifest.schema_version}, this Nachtwacht is at "
            f"{head}: restore it with Nachtwacht {manifest.nachtwacht_version or 'of that schema'}"
            ", then upgrade"
        )
    unknown = sorted(set(manifest.tables) ^ set(t.metadata.tables))
    if unknown:
        raise BackupError(f"backup {path.name} does not match this schema's tables: {unknown}")
    try:
        store.migrate()
        with open_rows(path, manifest) as read, store.begin() as conn:
            deleted, rows = _replace(conn, manifest, read, force)
        if backend_of(store.engine) == "mariadb":
            with store.begin() as conn:
                _fix_auto_increment(conn)
    except StoreError as exc:
        raise BackupError(f"restore failed, the store was not changed: {exc}") from None
    return RestoreReport(path, store.describe(), manifest.schema_version, rows, deleted)


def _replace(
    conn: Connection, manifest: Manifest, read: Reader, force: bool
) -> tuple[int, dict[str, int]]:
    existing = {
        table.name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
        for table in t.metadata.sorted_tables
    }
    filled = {name: n for name, n in existing.items() if n}
    if filled and not force:
        tables = ", ".join(f"{name} ({n})" for name, n in sorted(filled.items())[:5])
        raise BackupError(
            f"the store is not empty ({sum(filled.values())} rows: {tables}); "
            "restore refuses to overwrite it, use --force to replace its contents"
        )
    deleted = 0
    for table in reversed(t.metadata.sorted_tables):
        if existing[table.name]:
            deleted += conn.execute(table.delete()).rowcount
    rows: dict[str, int] = {}
    for table in t.metadata.sorted_tables:
        columns = list(manifest.tables[table.name]["columns"])
        rows[table.name] = 0
        for batch in read(table.name, columns):
            try:
                conn.execute(table.insert(), batch)
            except SQLAlchemyError as exc:
                raise BackupError(
                    f"restore failed at table {table.name}, the store was not changed: "
                    f"{_reason(exc)}"
                ) from None
            rows[table.name] += len(batch)
    if conn.dialect.name == "postgresql":
        _fix_sequences(conn)
    return deleted, rows


def _fix_sequences(conn: Connection) -> None:
    """Move each serial sequence past the restored ids, so new rows do not collide.

    setval is not transactional: after a failed commit a sequence may stay advanced, which
    only skips ids.
    """
    quote = conn.dialect.identifier_preparer.quote
    for table in t.metadata.sorted_tables:
        column = table.autoincrement_column
        if column is None:
            continue
        sequence = conn.execute(
            text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": column.name}
        ).scalar()
        if sequence:
            conn.execute(
                text(
                    f"SELECT setval(:s, COALESCE((SELECT MAX({quote(column.name)}) FROM "
                    f"{quote(table.name)}), 0) + 1, false)"
                ),
                {"s": sequence},
            )


def _fix_auto_increment(conn: Connection) -> None:
    """InnoDB moves AUTO_INCREMENT past explicit ids itself; make sure, table by table.

    Run after the restore committed: ALTER TABLE commits implicitly on MariaDB.
    """
    quote = conn.dialect.identifier_preparer.quote
    for table in t.metadata.sorted_tables:
        column = table.autoincrement_column
        if column is None:
            continue
        top = conn.execute(select(func.max(column))).scalar()
        if top is None:
            continue
        current = conn.execute(
            text(
                "SELECT AUTO_INCREMENT FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t"
            ),
            {"t": table.name},
        ).scalar()
        if current is None or int(current) <= int(top):
            conn.exec_driver_sql(f"ALTER TABLE {quote(table.name)} AUTO_INCREMENT = {int(top) + 1}")


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    lines = str(orig if orig is not None else exc).strip().splitlines()
    return lines[0] if lines else exc.__class__.__name__
