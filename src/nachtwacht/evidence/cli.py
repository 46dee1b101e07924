"""The `nachtwacht evidence` commands: capture, verify, list.

`verify` exits 0 when the bundle is unchanged, 1 when anything differs (a file, the manifest,
the bundle's bytes) or it cannot be read, 2 on bad input. It works without a store too (a
bundle copied to another machine), checking the manifest and the `.sha256` file beside it.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import select

from nachtwacht.cli.common import ConfigOption, JsonOption, fail, print_json, settings
from nachtwacht.clock import SystemClock
from nachtwacht.evidence import service
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store, StoreError

evidence_app = typer.Typer(help="Evidence bundles: capture and verify.", no_args_is_help=True)


def _actor(value: str | None) -> str:
    if value:
        return value
    try:
        return os.environ.get("USER") or getpass.getuser()
    except OSError:
        return "cli"


@evidence_app.command("capture")
def capture(
    incident: Annotated[
        int | None, typer.Option("--incident", "-i", min=1, help="Record it on this incident.")
    ] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="Who (default: $USER).")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Collect the journal, log tails, redacted configs, df/free/processes/load and
    Nachtwacht's own state into a hashed tar.gz."""
    cfg = settings(config)
    store = Store(cfg.store.url)
    try:
        store.migrate()
        bundle = service.capture_bundle(
            store, cfg, SystemClock(), incident_id=incident, actor=_actor(actor)
        )
    except StoreError as exc:
        fail(f"cannot use the store: {exc}", 2)
    except OSError as exc:
        fail(f"cannot write the bundle: {exc}", 1)
    finally:
        store.dispose()
    if as_json:
        print_json(bundle)
        return
    typer.echo(f"{bundle['path']}  ({bundle['files']} files, {bundle['size_bytes']} bytes)")
    typer.echo(f"manifest sha256 {bundle['manifest_sha256']}")
    for note in bundle["notes"]:
        typer.echo(f"note: {note}")
    if incident:
        typer.echo(f"recorded on incident #{incident}")


@evidence_app.command("verify")
def verify(
    bundle: Annotated[
        Path,
        typer.Argument(
            help="The bundle (.tar.gz): a path, a file name in the evidence directory, "
            "or its id from `evidence list`."
        ),
    ],
    no_store: Annotated[
        bool, typer.Option("--no-store", help="Do not compare with the store's record.")
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute every hash; exit 1 if anything changed since capture."""
    bundle = _locate(bundle, config)
    try:
        found = bundle.is_file()
    except OSError as exc:
        fail(f"{bundle}: {exc.strerror}", 2)
    if not found:
        fail(f"{bundle}: no such file", 2)
    store = None
    if not no_store:
        cfg = settings(config)
        store = Store(cfg.store.url)
    try:
        if store is not None:
            store.migrate()
        result = service.verify(store, bundle)
    except StoreError as exc:
        fail(f"cannot use the store: {exc} (use --no-store to check the bundle alone)", 2)
    finally:
        if store is not None:
            store.dispose()
    if as_json:
        print_json(result.as_dict())
    else:
        against = ", ".join(result.checked_against) or "the manifest only"
        if result.ok:
            typer.echo(
                f"OK  {bundle}: {result.files_checked} files unchanged "
                f"(manifest sha256 {result.manifest_sha256}; checked against {against})"
            )
        else:
            typer.echo(f"CHANGED  {bundle}: checked against {against}")
            for problem in result.problems:
                typer.echo(f"  {problem}")
    raise typer.Exit(0 if result.ok else 1)


@evidence_app.command("list")
def list_bundles(
    incident: Annotated[int | None, typer.Option("--incident", "-i", min=1)] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Captured bundles, newest first."""
    cfg = settings(config)
    store = Store(cfg.store.url)
    try:
        store.migrate()
        with store.connect() as conn:
            rows = service.list_bundles(conn, incident, limit)
    except StoreError as exc:
        fail(f"cannot use the store: {exc}", 2)
    finally:
        store.dispose()
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no evidence bundles yet")
    for r in rows:
        inc = f"incident #{r['incident_id']}" if r["incident_id"] else "no incident"
        typer.echo(
            f"#{r['id']:<4} {r['created_at']}  {inc:<14} {r['files']:>3} files  "
            f"{r['manifest_sha256'][:16]}…  {r['path']}"
        )


def _locate(bundle: Path, config: str | None) -> Path:
    """A path as given; else a name in the evidence directory; else an id in the store."""
    if bundle.exists() or bundle.is_absolute() or len(bundle.parts) > 1:
        return bundle
    cfg = settings(config)
    named = service.evidence_dir(cfg) / bundle
    if named.exists() or not str(bundle).isdigit():
        return named if named.exists() else bundle
    store = Store(cfg.store.url)
    try:
        with store.connect() as conn:
            row = conn.execute(
                select(t.evidence_bundles.c.path).where(t.evidence_bundles.c.id == int(str(bundle)))
            ).first()
    except StoreError as exc:
        fail(f"cannot look up bundle #{bundle}: {exc}", 2)
    finally:
        store.dispose()
    if row is None:
        fail(f"no evidence bundle #{bundle} (see `nachtwacht evidence list`)", 2)
    return Path(row[0])
