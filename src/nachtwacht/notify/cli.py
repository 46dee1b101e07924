"""`nachtwacht notify test CONTACT` and `nachtwacht notify outbox`: thin commands."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from nachtwacht.cli.common import ConfigOption, JsonOption, fail, print_json, settings
from nachtwacht.clock import SystemClock
from nachtwacht.notify.queries import STATUSES, list_outbox
from nachtwacht.notify.testmessage import send_test
from nachtwacht.store.db import Store, StoreError

notify_app = typer.Typer(
    help="Test notification channels; inspect the outbox.", no_args_is_help=True
)

WaitOption = Annotated[
    float,
    typer.Option("--wait", min=0, max=600, help="Seconds to keep retrying before giving up."),
]


def notify_test(
    contact: Annotated[str, typer.Argument(help="Contact id from people.contacts.")],
    config: ConfigOption = None,
    wait: WaitOption = 30.0,
    as_json: JsonOption = False,
) -> None:
    """Send a test message to CONTACT on every channel that reaches them; exit 1 if any fails."""
    cfg = settings(config)
    store = Store(cfg.store.url)
    try:
        store.migrate()
        results = asyncio.run(send_test(cfg, store, SystemClock(), contact, wait))
    except StoreError as exc:
        fail(f"cannot use the store: {exc}", 2)
    finally:
        store.dispose()
    if as_json:
        print_json(results)
    else:
        for r in results:
            typer.echo(_line(r))
    if any(r["status"] != "sent" for r in results):
        raise typer.Exit(1)


def _line(r: dict[str, Any]) -> str:
    where = f"{r['channel']} ({r['kind']})"
    target = r["address"] or ""
    if r["status"] == "sent":
        outcome = "sent" + (f" after {r['attempts']} attempts" if r["attempts"] > 1 else "")
    else:
        outcome = f"FAILED: {r['error'] or r['status']}"
    return f"{where:<24} {target:<28} {outcome}"


def outbox(
    config: ConfigOption = None,
    status: Annotated[
        str | None, typer.Option(help="Only rows of this status: " + ", ".join(STATUSES))
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: JsonOption = False,
) -> None:
    """The newest outbox rows: what was sent, what waits, what failed and why."""
    if status is not None and status not in STATUSES:
        fail(f"--status must be one of {', '.join(STATUSES)}", 2)
    cfg = settings(config)
    store = Store(cfg.store.url)
    try:
        store.migrate()
        rows = list_outbox(store, status, limit)
    except StoreError as exc:
        fail(f"cannot read the store: {exc}", 2)
    finally:
        store.dispose()
    if as_json:
        print_json(rows)
        return
    for r in rows:
        to = r["contact"] or "*"
        error = f"  {r['last_error']}" if r["last_error"] and r["status"] != "sent" else ""
        typer.echo(
            f"{r['id']:>6} {r['status']:<9} {r['kind']:<22} {r['channel']}:{to:<14} "
            f"tries {r['attempts']}  {r['sent_at'] or r['next_attempt_at']}{error}"
        )


notify_app.command("test")(notify_test)
notify_app.command("outbox")(outbox)

__all__ = ["notify_app", "notify_test", "outbox"]
