"""The `nachtwacht security` commands."""

from __future__ import annotations

import typer

from nachtwacht.security.report_cli import report

security_app = typer.Typer(
    help="Security monitoring of the watched stack: the report.", no_args_is_help=True
)
security_app.command("report")(report)
