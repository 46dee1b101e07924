"""The `nachtwacht backup / export / store` commands."""

from __future__ import annotations

import typer

backup_app = typer.Typer(
    help="Backups of the store: create, list, verify, restore.", no_args_is_help=True
)
store_app = typer.Typer(help="The store itself: integrity check.", no_args_is_help=True)
