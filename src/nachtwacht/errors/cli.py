"""The `nachtwacht errors / project` commands."""

from __future__ import annotations

import typer

errors_app = typer.Typer(help="Error issues: list, show, resolve, ignore.", no_args_is_help=True)
project_app = typer.Typer(help="Projects that report errors, and their DSNs.", no_args_is_help=True)
