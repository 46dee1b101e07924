"""Evidence bundles: capture the state into a hashed tar.gz, record it, list and verify them.

A bundle is `evidence-<UTC time>[-inc<ID>].tar.gz` under `evidence.dir`, holding one folder of
the same name with the collected files and `manifest.json` (a SHA-256 and size per file, the
host, the time, the incident, what could not be collected). Every member passes through the
redactor before it is hashed: what the manifest vouches for is what was written, and no
password is ever written. The manifest's hash goes into `evidence_bundles` and onto the
incident's timeline, the bundle file's hash into the store and a `.sha256` file beside it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from nachtwacht.clock import Clock, iso
from nachtwacht.config.redact import settings_secrets
from nachtwacht.config.redactor import Redactor
from nachtwacht.config.schema import Settings
from nachtwacht.evidence import capture
from nachtwacht.evidence.verify import (
    FORMAT,
    MANIFEST,
    Verification,
    file_sha256,
    sidecar,
    verify_bundle,
)
from nachtwacht.incidents import service as incidents
from nachtwacht.probes.report import status_report
from nachtwacht.problems import Problem
from nachtwacht.store import paging
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store, inserted_id

RECENT_ALERTS = 200


class EvidenceError(Problem):
    """An evidence bundle that cannot be captured as asked; `field` names the culprit."""


def evidence_dir(settings: Settings) -> Path:
    return settings.evidence.directory(settings.data_dir)


def redactor(settings: Settings) -> Redactor:
    """Knows every secret of the config (what the settings page masks: passwords, URL
    passwords and signatures, webhook and dead man's URLs, header values, secret variables,
    values from the environment or files) before it reads a single collected file."""
    return Redactor(settings_secrets(settings))


def nachtwacht_state(
    conn: Connection, settings: Settings, now: float, incident_id: int | None
) -> dict:
    """Probe states, module health, open incidents, recent alerts, and the incident's timeline."""
    state: dict[str, Any] = status_report(conn, now, settings.site)
    alerts = conn.execute(
        select(t.alerts)
        .where(t.alerts.c.last_seen >= now - 86400)
        .order_by(t.alerts.c.id.desc())
        .limit(RECENT_ALERTS)
    ).mappings()
    state["recent_alerts"] = [_times(dict(a)) for a in alerts]
    if incident_id is not None:
        inc = incidents.require(conn, incident_id)
        state["incident"] = _times(inc)
        state["incident"].pop("ack_token", None)  # a capability URL's secret: not evidence
        state["incident_timeline"] = [
            {**e, "ts": iso(e["ts"])} for e in incidents.timeline(conn, incident_id)
        ]
    sec = settings.security
    if sec.sources or sec.respond.enabled:
        # the blocks and the lockdown's rows, lifted ones too: what containment did, and when
        # (read from the table: the security domain imports runbooks, which import this one)
        rows = conn.execute(
            select(t.security_blocks).order_by(t.security_blocks.c.id.desc()).limit(500)
        ).mappings()
        state["security_blocks"] = [
            {k: iso(v) if k.endswith("_at") and v is not None else v for k, v in r.items()}
            for r in rows
        ]
    return state


def security_logs(settings: Settings, out: capture.Collected) -> None:
    """The logs the security detectors read (their last lines: the attack's window), unless
    evidence.log_files takes them already."""
    cfg = settings.evidence
    taken = {str(p) for p in capture.expand(cfg.log_files)}
    for source in settings.security.sources:
        if not source.path or source.kind == "frappe_activity" or source.path in taken:
            continue
        try:
            data = capture.tail(Path(source.path), cfg.tail_lines, cfg.max_file_bytes)
        except OSError as exc:
            out.notes.append(f"security log {source.name}: {exc.strerror or exc}")
            continue
        out.add(f"security/{source.name}.log", data)


def _times(row: dict[str, Any]) -> dict[str, Any]:
    """Epoch columns (`*_at`, `last_seen`) as ISO 8601 UTC, for people reading the bundle."""
    return {
        k: iso(v) if (k.endswith("_at") or k == "last_seen") and v is not None else v
        for k, v in row.items()
    }


def _name(now: float, incident_id: int | None, directory: Path) -> str:
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    base = f"evidence-{stamp}" + (f"-inc{incident_id}" if incident_id else "")
    name, n = base, 2
    while (directory / f"{name}.tar.gz").exists():
        name, n = f"{base}-{n}", n + 1
    return name


def _write(path: Path, top: str, members: dict[str, bytes], now: float) -> None:
    """Write the tar.gz next to its final name, fsync, then rename: never a half bundle."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(f"{top}/{name}")
                info.size = len(data)
                info.mtime = int(now)
                info.mode = 0o600
                tar.addfile(info, io.BytesIO(data))
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(partial, path)


def capture_bundle(
    store: Store,
    settings: Settings,
    clock: Clock,
    *,
    incident_id: int | None = None,
    actor: str = "nachtwacht",
) -> dict[str, Any]:
    """Collect, redact, hash, write and record one bundle; returns its row as a view."""
    now = clock.now()
    with store.connect() as conn:
        if incident_id is not None and incidents.get_incident(conn, incident_id) is None:
            raise EvidenceError(f"no incident {incident_id}", "incident_id", kind="not_found")
        state = nachtwacht_state(conn, settings, now, incident_id)
    collected = capture.collect(settings.evidence)
    security_logs(settings, collected)
    collected.add("nachtwacht/state.json", json.dumps(state, indent=2, default=str).encode())
    redact = redactor(settings)
    for data in collected.members.values():  # learn every secret first, then mask everywhere
        redact.learn(data.decode("utf-8", errors="replace"))
    members = {name: redact.bytes(data) for name, data in collected.members.items()}

    directory = evidence_dir(settings)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    top = _name(now, incident_id, directory)
    host = socket.gethostname()
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "site": settings.site,
        "host": host,
        "created_at": iso(now),
        "created_at_epoch": now,
        "incident_id": incident_id,
        "created_by": actor,
        "redacted": "the config's secrets, URL passwords and values assigned to secret-named "
        "keys are masked",
        "notes": [redact.text(n) for n in collected.notes],
        "files": [
            {"path": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in members.items()
        ],
    }
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
    manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
    members[MANIFEST] = manifest_bytes
    path = (directory / f"{top}.tar.gz").absolute()
    _write(path, top, members, now)
    bundle_sha = capture_hash(path)
    size = path.stat().st_size
    with store.begin() as conn:
        bundle_id = inserted_id(
            conn.execute(
                t.evidence_bundles.insert().values(
                    incident_id=incident_id,
                    path=str(path),
                    manifest_sha256=manifest_sha,
                    bundle_sha256=bundle_sha,
                    host=host[:200],
                    files=len(manifest["files"]),
                    size_bytes=size,
                    created_by=actor,
                    created_at=now,
                )
            )
        )
        if incident_id is not None:
            incidents.add_event(
                conn,
                incident_id,
                now,
                "evidence",
                actor,
                f"evidence bundle {path.name} captured ({len(manifest['files'])} files); "
                f"manifest SHA-256 {manifest_sha}",
                {
                    "bundle_id": bundle_id,
                    "path": str(path),
                    "manifest_sha256": manifest_sha,
                    "bundle_sha256": bundle_sha,
                },
            )
        row = (
            conn.execute(select(t.evidence_bundles).where(t.evidence_bundles.c.id == bundle_id))
            .mappings()
            .one()
        )
    return view(dict(row)) | {"notes": manifest["notes"]}


def capture_hash(path: Path) -> str:
    """The bundle file's SHA-256, also written beside it as `<bundle>.sha256`."""
    digest = file_sha256(path)
    side = sidecar(path)
    fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(f"{digest}  {path.name}\n")
    return digest


def view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "incident_id": row["incident_id"],
        "path": row["path"],
        "name": Path(row["path"]).name,
        "manifest_sha256": row["manifest_sha256"],
        "bundle_sha256": row["bundle_sha256"],
        "host": row["host"],
        "files": row["files"],
        "size_bytes": row["size_bytes"],
        "created_by": row["created_by"],
        "created_at": iso(row["created_at"]),
    }


def _query(incident_id: int | None) -> Any:
    query = select(t.evidence_bundles).order_by(t.evidence_bundles.c.id.desc())
    if incident_id is not None:
        query = query.where(t.evidence_bundles.c.incident_id == incident_id)
    return query


def list_bundles(
    conn: Connection, incident_id: int | None = None, limit: int | None = 100, offset: int = 0
) -> list[dict[str, Any]]:
    rows = conn.execute(paging.window(_query(incident_id), limit, offset)).mappings()
    return [view(dict(r)) for r in rows]


def count_bundles(conn: Connection, incident_id: int | None = None) -> int:
    return paging.count(conn, _query(incident_id))


def get_bundle(conn: Connection, bundle_id: int) -> dict[str, Any] | None:
    row = (
        conn.execute(select(t.evidence_bundles).where(t.evidence_bundles.c.id == bundle_id))
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def find_record(conn: Connection, path: Path) -> dict[str, Any] | None:
    """The store's row for a bundle file: by its absolute path, else by its file name (a
    bundle copied elsewhere for analysis is still checked against what was recorded)."""
    full = str(path.absolute())
    row = (
        conn.execute(select(t.evidence_bundles).where(t.evidence_bundles.c.path == full))
        .mappings()
        .first()
    )
    if row is None:
        row = (
            conn.execute(
                select(t.evidence_bundles)
                .where(t.evidence_bundles.c.path.like(f"%/{path.name}"))
                .order_by(t.evidence_bundles.c.id.desc())
            )
            .mappings()
            .first()
        )
    return dict(row) if row is not None else None


def verify(store: Store | None, path: Path) -> Verification:
    """Verify a bundle file, against the store's record of it when there is one."""
    record = None
    if store is not None:
        with store.connect() as conn:
            record = find_record(conn, path)
    result = verify_bundle(
        path,
        recorded_manifest=record["manifest_sha256"] if record else None,
        recorded_bundle=record["bundle_sha256"] if record else None,
    )
    if record is not None:
        result.checked_against.insert(0, f"store record #{record['id']}")
    return result
