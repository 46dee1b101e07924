"""The `nachtwacht report / followup / postmortem` commands."""

from __future__ import annotations

import typer

report_app = typer.Typer(help="Post-incident and monthly reports.", no_args_is_help=True)
followup_app = typer.Typer(help="Improvement actions from reviews.", no_args_is_help=True)
postmortem_app = typer.Typer(help="Fill in a post-incident review.", no_args_is_help=True)
