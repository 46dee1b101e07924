"""The `nachtwacht backup ...`, `nachtwacht store check` and `nachtwacht export` commands.

None of them migrates the store they read: a backup or a check shows the store as it is.
Exit codes: 0 done, 1 the backup, restore or check failed, 2 bad input or the store unreachable.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from nachtwacht.backup import service
from nachtwacht.backup.export import ExportError, parse_when
from nachtwacht.backup.export import export as write_export
from nachtwacht.backup.integrity import check_store
from nachtwacht.backup.manifest import BackupError
from nachtwacht.backup.restore import restore_backup, verify_backup
from nachtwacht.cli.common import ConfigOption, JsonOption, fail, print_json, settings
from nachtwacht.clock import SystemClock
from nachtwacht.store.db import Store, StoreError

backup_app = typer.Typer(
    help="Backups of the store: create, list, verify, restore.", no_args_is_help=True
)
store_app = typer.Typer(help="The store itself: integrity check.", no_args_is_help=True)

DirOption = Annotated[
    Path | None,
    typer.Option("--dir", help="Backup directory (default: backup.dir, else DATA_DIR/backups)."),
]
NameArgument = Annotated[
    str, typer.Argument(help="A backup name from `nachtwacht backup list`, or a backup directory.")
]


@contextmanager
def _open(url: str) -> Iterator[Store]:
    try:
        store = Store(url)
    except Exception as exc:  # a malformed URL or a missing driver: one line, not a trace
        fail(f"cannot open the store {url.split('://')[0]}://...: {exc}", 2)
    try:
        yield store
    finally:
        store.dispose()


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def _utc(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


@backup_app.command("create")
def create(
    directory: DirOption = None,
    logical: Annotated[
        bool,
        typer.Option("--logical", help="JSON lines even for a SQLite store (servers always are)."),
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Back up the whole store now (SQLite: online backup; servers: a logical export)."""
    cfg = settings(config)
    target = directory or service.backup_dir(cfg)
    with _open(cfg.store.url) as store:
        try:
            info = service.create_backup(store, target, SystemClock().now(), logical=logical)
        except BackupError as exc:
            fail(str(exc), 1)
    if as_json:
        print_json(info.as_dict())
        return
    data = info.as_dict()
    typer.echo(
        f"created {info.path}: {data['rows']} rows in {data['tables']} tables, "
        f"{_size(data['bytes'])}, schema {data['schema_version']}"
    )


@backup_app.command("list")
def list_(
    directory: DirOption = None, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """The backups in the backup directory, newest first."""
    cfg = settings(config)
    target = directory or service.backup_dir(cfg)
    backups = service.list_backups(target)
    if as_json:
        print_json([b.as_dict() for b in backups])
        return
    if not backups:
        typer.echo(f"no backups in {target}")
        return
    typer.echo(
        f"{'NAME':<32} {'CREATED (UTC)':<20} {'FROM':<11} {'SCHEMA':<7} {'ROWS':>10} {'SIZE':>9}"
    )
    for b in backups:
        d = b.as_dict()
        if b.manifest is None:
            typer.echo(f"{b.name:<32} unreadable: {b.error}")
            continue
        typer.echo(
            f"{b.name:<32} {_utc(d['created_at_epoch']):<20} {d['source_backend']:<11} "
            f"{d['schema_version']:<7} {d['rows']:>10} {_size(d['bytes']):>9}"
        )


@backup_app.command("verify")
def verify(
    name: NameArgument,
    directory: DirOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute a backup's SHA-256 sums, schema version and row counts; exit 1 if any differ."""
    cfg = settings(config)
    try:
        path = service.find(directory or service.backup_dir(cfg), name)
    except BackupError as exc:
        fail(str(exc), 2)
    report = verify_backup(path)
    if as_json:
        print_json(report.as_dict())
    elif report.ok:
        files = len(report.manifest.files) if report.manifest else 0
        typer.echo(
            f"ok: {path.name}: the SHA-256 of {files} file(s) and the {sum(report.rows.values())} "
            f"rows in {len(report.rows)} tables match the manifest"
        )
    else:
        for problem in report.problems:
            typer.echo(f"error: {path.name}: {problem}", err=True)
    if not report.ok:
        raise typer.Exit(1)


@backup_app.command("restore")
def restore(
    name: NameArgument,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the rows of a store that is not empty.")
    ] = False,
    to: Annotated[
        str | None,
        typer.Option("--to", help="Restore into this store URL instead of the config's store."),
    ] = None,
    directory: DirOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Restore a backup into the store (stop `serve` first); all or nothing, in one transaction."""
    cfg = settings(config)
    try:
        path = service.find(directory or service.backup_dir(cfg), name)
    except BackupError as exc:
        fail(str(exc), 2)
    with _open(to or cfg.store.url) as store:
        try:
            report = restore_backup(path, store, force=force)
        except BackupError as exc:
            fail(str(exc), 1)
        _audit_restore(store, path.name, report.as_dict())
    if as_json:
        print_json(report.as_dict())
        return
    data = report.as_dict()
    typer.echo(
        f"restored {path.name} into {report.target}: {data['rows']} rows in {data['tables']} "
        f"tables" + (f" (replaced {report.deleted} rows)" if report.deleted else "")
    )


def _audit_restore(store: Store, name: str, detail: dict[str, object]) -> None:
    from nachtwacht.auth.audit import audit

    try:
        who = os.environ.get("USER") or getpass.getuser()
    except OSError:
        who = "cli"
    try:
        with store.begin() as conn:
            audit(conn, f"cli:{who}", "backup.restore", name, detail, None, SystemClock().now())
    except StoreError as exc:
        typer.echo(f"warning: restored, but the audit entry was not written: {exc}", err=True)


@store_app.command("check")
def check(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The backend's integrity check, the catalog and the schema version; exit 1 on failure."""
    cfg = settings(config)
    with _open(cfg.store.url) as store:
        report = check_store(store)
    if as_json:
        print_json(report.as_dict())
    else:
        typer.echo(f"store {report.store} ({report.backend}, schema {report.schema_version})")
        for c in report.checks:
            typer.echo(f"  {c.status.upper():<7} {c.name}: {c.detail}")
        if report.ok:
            typer.echo(f"ok: {report.summary()}")
        else:
            typer.echo(f"error: store check failed: {report.summary()}", err=True)
    if not report.ok:
        raise typer.Exit(1)


def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="The JSON file to write.")],
    since: Annotated[
        str | None,
        typer.Option(help="Start: ISO 8601 (UTC unless it says so), epoch, or e.g. 7d ago."),
    ] = None,
    until: Annotated[str | None, typer.Option(help="End (exclusive); default now.")] = None,
    config: ConfigOption = None,
) -> None:
    """Export probes, results, alerts, incidents with timelines and errors as JSON."""
    cfg = settings(config)
    now = SystemClock().now()
    try:
        start = parse_when(since, now, "since")
        end = parse_when(until, now, "until")
    except ExportError as exc:
        fail(str(exc), 2)
    with _open(cfg.store.url) as store:
        try:
            counts = write_export(
                store,
                output,
                since=start,
                until=end if end is not None else now,
                now=now,
                site=cfg.site,
            )
        except ExportError as exc:
            fail(str(exc), 2)
        except (StoreError, OSError) as exc:
            fail(f"export failed: {exc}", 1)
    typer.echo(f"wrote {output}: " + ", ".join(f"{n} {name}" for name, n in counts.items()))


@backup_app.command("test-restore")
def test_restore(
    name: Annotated[
        str | None,
        typer.Argument(
            metavar="[FILE]",
            help="A backup name or directory; default: the newest backup.",
        ),
    ] = None,
    directory: DirOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Restore a backup into a scratch store and check it; record the result; exit 1 if it fails."""
    from nachtwacht.backup import restoretest
    from nachtwacht.cli.common import open_store

    cfg = settings(config)
    where = directory or service.backup_dir(cfg)
    # a mistyped name, or nothing to test yet, is refused before anything is recorded or alerted
    if name is not None:
        try:
            service.find(where, name)
        except BackupError as exc:
            fail(str(exc), 2)
    elif not service.list_backups(where):
        fail(f"no backup in {where} to test: make one with `nachtwacht backup create`", 2)
    with open_store(cfg) as store:
        result = restoretest.run(cfg, store, SystemClock(), name, "manual", directory)
    if as_json:
        print_json(result)
    elif result["ok"]:
        typer.echo(f"ok: {result['summary']}")
    else:
        for problem in result["problems"]:
            typer.echo(f"error: {result['backup'] or '-'}: {problem}", err=True)
        typer.echo(
            f"restore test #{result['id']} failed; the alert restore-test is raised", err=True
        )
    if not result["ok"]:
        raise typer.Exit(1)
