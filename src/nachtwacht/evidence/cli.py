"""The `nachtwacht evidence` commands."""

from __future__ import annotations

import typer

evidence_app = typer.Typer(help="Evidence bundles: capture and verify.", no_args_is_help=True)
