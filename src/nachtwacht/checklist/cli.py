"""The `nachtwacht verify` command (the restoration checklist)."""

from __future__ import annotations

import asyncio
import getpass
import os
from typing import Annotated, Any

import typer

from nachtwacht.checklist import service
from nachtwacht.checklist.items import Context
from nachtwacht.cli.common import ConfigOption, JsonOption, fail, print_json, settings
from nachtwacht.clock import SystemClock
from nachtwacht.store.db import Store, StoreError

MARKS = {True: "PASS", False: "FAIL"}


def _actor() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except OSError:
        return "cli"


def verify(
    incident: Annotated[
        int | None, typer.Option("--incident", min=1, help="Record the run on this incident.")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the Service Restoration Checklist now; exit 1 if any item fails.

    Each item is a real check: the store and sql probes, http probes, the dashboard and every
    API of the running server, analytics, the performance baseline, redis probes and the
    analytics cache, a test notification, the store's integrity check and access controls.
    """
    cfg = settings(config)
    store = Store(cfg.store.url)
    try:
        store.migrate()
    except StoreError as exc:
        # the store is the first thing restoration needs: say so, still as a failed checklist
        store.dispose()
        fail(f"database connectivity: cannot use the store: {exc}", 1)
    ctx = Context(cfg, store, SystemClock(), _actor(), incident_id=incident)
    try:
        run = asyncio.run(service.verify(ctx))
    except StoreError as exc:
        fail(f"cannot record the checklist run: {exc}", 1)
    finally:
        store.dispose()
    if as_json:
        print_json(run)
    else:
        _print(run)
    if not run["passed"]:
        raise typer.Exit(1)


def _print(run: dict[str, Any]) -> None:
    for item in run["items"]:
        mark = "SKIP" if item["skipped"] else MARKS[item["ok"]]
        typer.echo(f"{mark}  {item['label']:<50} {item['detail']}")
    where = f" on incident #{run['incident_id']}" if run["incident_id"] else ""
    failed = [i["item"] for i in run["items"] if not i["ok"]]
    verdict = "passed" if run["passed"] else f"FAILED ({', '.join(failed)})"
    typer.echo(f"checklist run #{run['id']}{where}: {verdict}")
