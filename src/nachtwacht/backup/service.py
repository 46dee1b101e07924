"""Create, list, find and prune backups in a backup directory.

A backup is named for the UTC time it was made, `nachtwacht-20270115T080000Z` (a `-2`, `-3`
suffix when two land in the same second), so names sort by age.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from nachtwacht.backup.dump import dump_logical
from nachtwacht.backup.integrity import backend_of
from nachtwacht.backup.manifest import (
    PARTIAL,
    BackupError,
    Manifest,
    fsync_tree,
    read_manifest,
    write_manifest,
)
from nachtwacht.backup.sqlite_backup import backup_sqlite
from nachtwacht.clock import iso
from nachtwacht.config.schema import Settings
from nachtwacht.store.db import Store, StoreError

NAME_RE = re.compile(r"^nachtwacht-\d{8}T\d{6}Z(-\d{1,4})?$")
# an unfinished `.partial` directory older than this is left over from a crash
STALE_PARTIAL_SECONDS = 86400.0


def backup_dir(settings: Settings) -> Path:
    """`backup.dir`, else `backups/` in the data directory."""
    return settings.backup.dir or settings.data_dir / "backups"


@dataclass
class BackupInfo:
    name: str
    path: Path
    manifest: Manifest | None
    error: str | None = None  # why the manifest could not be read

    def as_dict(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "name": self.name,
            "path": str(self.path),
            "created_at": iso(m.created_at) if m else None,
            "created_at_epoch": m.created_at if m else None,
            "kind": m.kind if m else None,
            "source_backend": m.source_backend if m else None,
            "schema_version": m.schema_version if m else None,
            "tables": len(m.tables) if m else None,
            "rows": m.total_rows if m else None,
            "bytes": m.total_bytes if m else None,
            "error": self.error,
        }


def create_backup(
    store: Store, directory: Path, now: float, *, logical: bool = False
) -> BackupInfo:
    """A consistent backup of the whole store in `directory`: the SQLite online backup for a
    SQLite store, the logical JSON-lines dump for PostgreSQL and MariaDB (or when `logical`)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        name = _free_name(directory, now)
        partial = directory / (name + PARTIAL)
        partial.mkdir()
    except OSError as exc:
        raise BackupError(f"cannot write to the backup directory {directory}: {exc}") from None
    try:
        backend = backend_of(store.engine)
        if backend == "sqlite" and not logical:
            kind, (revision, tables) = "sqlite", backup_sqlite(store, partial)
        else:
            kind, (revision, tables) = "logical", dump_logical(store, partial)
        manifest = Manifest(kind, now, backend, store.describe(), revision, tables)
        write_manifest(partial, manifest)
        fsync_tree(partial)
        final = directory / name
        partial.rename(final)
        _fsync_dir(directory)
    except (StoreError, SQLAlchemyError, sqlite3.Error, OSError) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise BackupError(f"backup of {store.describe()} failed: {_reason(exc)}") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return BackupInfo(name, final, manifest)


def list_backups(directory: Path) -> list[BackupInfo]:
    """Every finished backup in `directory`, newest first; an unreadable one carries `error`."""
    if not directory.is_dir():
        return []
    out: list[BackupInfo] = []
    for path in directory.iterdir():
        if not path.is_dir() or not NAME_RE.match(path.name):
            continue
        try:
            out.append(BackupInfo(path.name, path, read_manifest(path)))
        except (BackupError, OSError) as exc:
            out.append(BackupInfo(path.name, path, None, str(exc)))
    return sorted(out, key=_age_key, reverse=True)


def find(directory: Path, name: str) -> Path:
    """The backup called `name` in `directory`, or a path given as is; BackupError if absent."""
    given = Path(name)
    if (os.sep in name or name.startswith(".")) and given.is_dir():
        return given
    if not NAME_RE.match(name):
        if given.is_dir():
            return given
        raise BackupError(
            f"no backup '{name}': give a name such as nachtwacht-20270115T080000Z "
            f"(see `nachtwacht backup list`) or a backup directory"
        )
    path = directory / name
    if not path.is_dir():
        raise BackupError(f"no backup '{name}' in {directory} (see `nachtwacht backup list`)")
    return path


def prune(directory: Path, keep: int) -> list[str]:
    """Delete all but the `keep` newest backups (and stale unfinished ones); their names.

    Only backups with a readable manifest count and are deleted: a damaged one must not push a
    good one out, and is left for a person to look at (`backup list` shows it).
    """
    deleted: list[str] = []
    readable = [info for info in list_backups(directory) if info.manifest is not None]
    for info in readable[keep:]:
        shutil.rmtree(info.path)
        deleted.append(info.name)
    for path in directory.glob(f"nachtwacht-*{PARTIAL}") if directory.is_dir() else ():
        # wall-clock age: a running backup in another process touches its files constantly
        if time.time() - path.stat().st_mtime > STALE_PARTIAL_SECONDS:
            shutil.rmtree(path, ignore_errors=True)
            deleted.append(path.name)
    return deleted


def newest_created_at(directory: Path) -> float | None:
    for info in list_backups(directory):
        if info.manifest is not None:
            return info.manifest.created_at
    return None


def _age_key(info: BackupInfo) -> tuple[float, str]:
    created = info.manifest.created_at if info.manifest else _time_of(info.name)
    return created, info.name


def _time_of(name: str) -> float:
    stamp = name.removeprefix("nachtwacht-")[:16]
    try:
        return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0


def _free_name(directory: Path, now: float) -> str:
    base = "nachtwacht-" + datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    name, n = base, 1
    while (directory / name).exists() or (directory / (name + PARTIAL)).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    lines = str(orig if orig is not None else exc).strip().splitlines()
    return lines[0] if lines else exc.__class__.__name__
