"""The manifest every backup carries, and checking a backup against it.

A backup is a directory:

    nachtwacht-20270115T080000Z/
      manifest.json       what is inside: schema version, row counts, SHA-256 of every file
      manifest.sha256     SHA-256 of manifest.json, so an edited manifest is noticed too
      nachtwacht.db       kind "sqlite": a copy made with SQLite's online backup API
      tables/<t>.jsonl.gz kind "logical": one gzip'd JSON-lines file per table

A backup is written as `<name>.partial` and renamed once complete, so a directory without that
suffix and with a manifest is always whole.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nachtwacht import __version__
from nachtwacht.clock import iso

FORMAT = "nachtwacht-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.sha256"
SQLITE_FILE = "nachtwacht.db"
TABLES_DIR = "tables"
PARTIAL = ".partial"
_CHUNK = 1 << 20


class BackupError(Exception):
    """A backup cannot be made, read, verified or restored; the message says why."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def table_file(table: str) -> str:
    return f"{TABLES_DIR}/{table}.jsonl.gz"


@dataclass
class Manifest:
    kind: str  # sqlite | logical
    created_at: float
    source_backend: str  # sqlite | postgresql | mariadb
    source: str  # the store URL without its password
    schema_version: str
    # {table: {"rows": n, "columns": [names in the order of each JSON line]}}
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    # {relative path: {"sha256": hex, "bytes": n}}
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    nachtwacht_version: str = __version__

    @property
    def total_rows(self) -> int:
        return sum(int(v["rows"]) for v in self.tables.values())

    @property
    def total_bytes(self) -> int:
        return sum(int(v["bytes"]) for v in self.files.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "created_at": self.created_at,
            "created_at_iso": iso(self.created_at),
            "source_backend": self.source_backend,
            "source": self.source,
            "schema_version": self.schema_version,
            "nachtwacht_version": self.nachtwacht_version,
            "tables": self.tables,
            "files": self.files,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BackupError(f"{MANIFEST} is not a Nachtwacht backup manifest")
        if data.get("format_version") != FORMAT_VERSION:
            raise BackupError(
                f"{MANIFEST} has format version {data.get('format_version')!r}; "
                f"this Nachtwacht reads version {FORMAT_VERSION}"
            )
        try:
            manifest = cls(
                kind=str(data["kind"]),
                created_at=float(data["created_at"]),
                source_backend=str(data["source_backend"]),
                source=str(data.get("source", "")),
                schema_version=str(data["schema_version"]),
                tables=dict(data["tables"]),
                files=dict(data["files"]),
                nachtwacht_version=str(data.get("nachtwacht_version", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BackupError(f"{MANIFEST} is incomplete: {exc!r}") from None
        if manifest.kind not in ("sqlite", "logical"):
            raise BackupError(f"{MANIFEST}: unknown kind '{manifest.kind}'")
        return manifest


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Hash every data file into the manifest, then write it and its own checksum, fsync'd."""
    manifest.files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel in (MANIFEST, MANIFEST_SUM):
            continue
        manifest.files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    raw = (json.dumps(manifest.as_dict(), indent=2, sort_keys=True) + "\n").encode()
    _write_synced(directory / MANIFEST, raw)
    _write_synced(
        directory / MANIFEST_SUM, f"{hashlib.sha256(raw).hexdigest()}  {MANIFEST}\n".encode()
    )


def read_manifest(directory: Path) -> Manifest:
    """The manifest, after checking it against manifest.sha256; BackupError if it does not match."""
    path = directory / MANIFEST
    if not directory.is_dir():
        raise BackupError(f"{directory} is not a backup directory")
    if not path.is_file():
        raise BackupError(f"{directory} has no {MANIFEST}: not a backup, or an unfinished one")
    raw = path.read_bytes()
    sum_path = directory / MANIFEST_SUM
    if not sum_path.is_file():
        raise BackupError(f"{directory} has no {MANIFEST_SUM}")
    expected = sum_path.read_text(encoding="utf-8", errors="replace").split()[:1]
    if expected != [hashlib.sha256(raw).hexdigest()]:
        raise BackupError(f"{MANIFEST} does not match {MANIFEST_SUM}: the manifest was changed")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BackupError(f"{MANIFEST} is not valid JSON: {exc}") from None
    return Manifest.from_dict(data)


def check_files(directory: Path, manifest: Manifest) -> dict[str, str]:
    """{file: problem} for files missing, extra, or of the wrong size or SHA-256."""
    problems: dict[str, str] = {}
    for rel, meta in sorted(manifest.files.items()):
        path = directory / rel
        if not path.is_file():
            problems[rel] = f"{rel} is missing"
        elif path.stat().st_size != int(meta.get("bytes", -1)):
            problems[rel] = (
                f"{rel} has {path.stat().st_size} bytes, the manifest says {meta.get('bytes')}"
            )
        elif sha256_file(path) != meta.get("sha256"):
            problems[rel] = f"{rel}: SHA-256 does not match the manifest (the file was changed)"
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel not in manifest.files and rel not in (MANIFEST, MANIFEST_SUM):
            problems[rel] = f"{rel} is not in the manifest"
    return problems


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_tree(directory: Path) -> None:
    """fsync every file and directory, so a finished backup survives a power cut."""
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
    for path in [directory, *[p for p in directory.rglob("*") if p.is_dir()]]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
