"""The `nachtwacht runbook` commands."""

from __future__ import annotations

import typer

runbook_app = typer.Typer(help="Runbooks: list, show, run.", no_args_is_help=True)
