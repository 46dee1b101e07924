"""The `nachtwacht analytics / baseline / flags / cache` commands."""

from __future__ import annotations

import typer

analytics_app = typer.Typer(help="Error patterns and forecasts.", no_args_is_help=True)
baseline_app = typer.Typer(help="Capture and compare performance baselines.", no_args_is_help=True)
flags_app = typer.Typer(help="Run-time feature flags of the protocol.", no_args_is_help=True)
cache_app = typer.Typer(help="The analytics results cache.", no_args_is_help=True)
