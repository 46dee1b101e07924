"""The `nachtwacht analytics / baseline / flags / cache` commands, working straight on the store.

In fallback mode (disable_advanced_analytics) `analytics errors|forecast` say so and exit 3.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer

from nachtwacht.analytics import cache, flags, service
from nachtwacht.analytics.render import compare_lines, error_lines, forecast_lines
from nachtwacht.cli.common import ConfigOption, JsonOption, fail, print_json, settings
from nachtwacht.cli.common import cli_actor as _actor
from nachtwacht.cli.common import open_store as _store
from nachtwacht.clock import SystemClock
from nachtwacht.config.schema import Settings
from nachtwacht.durations import parse_duration
from nachtwacht.store.db import Store

analytics_app = typer.Typer(help="Error patterns and forecasts.", no_args_is_help=True)
baseline_app = typer.Typer(help="Capture and compare performance baselines.", no_args_is_help=True)
flags_app = typer.Typer(help="Run-time feature flags of the protocol.", no_args_is_help=True)
cache_app = typer.Typer(help="The analytics results cache.", no_args_is_help=True)

T = TypeVar("T")
DISABLED_EXIT = 3
ActorOption = Annotated[
    str | None, typer.Option("--actor", help="Who is doing this (default: $USER).")
]
FreshOption = Annotated[
    bool, typer.Option("--fresh", help="Compute now instead of using the results cache.")
]


def _run(config: str | None, work: Callable[[Store, Settings, float], T]) -> T:
    cfg = settings(config)
    with _store(cfg) as store:
        return work(store, cfg, SystemClock().now())


def _disabled(data: dict[str, Any], as_json: bool) -> None:
    if data.get("disabled"):
        if as_json:
            print_json(data)
        else:
            typer.echo(data["message"], err=True)
        raise typer.Exit(DISABLED_EXIT)


def _window(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        fail(f"--window: {exc}", 2)
    if seconds < 60:
        fail("--window: at least 1 minute", 2)
    return seconds


# ---------------------------------------------------------------------------- analytics


@analytics_app.command("errors")
def analytics_errors(
    days: Annotated[int, typer.Option("--days", min=1, max=90, help="The window, in days.")] = 7,
    environment: Annotated[
        list[str] | None, typer.Option("--environment", "-e", help="Only this environment.")
    ] = None,
    project: Annotated[int | None, typer.Option("--project-id", min=1)] = None,
    fresh: FreshOption = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Error trend, hours of the day, categories, top/new/recurring issues, growth, spikes."""
    data = _run(
        config,
        lambda store, cfg, now: service.error_patterns(
            store, cfg, now, days, environment, project, use_cache=not fresh
        ),
    )
    _disabled(data, as_json)
    if as_json:
        print_json(data)
        return
    for line in error_lines(data):
        typer.echo(line)


@analytics_app.command("forecast")
def analytics_forecast(
    fresh: FreshOption = False, as_json: JsonOption = False, config: ConfigOption = None
) -> None:
    """Disk-full forecasts, latency and failure-rate trends, the error-rate trend."""
    data = _run(config, lambda store, cfg, now: service.forecasts(store, cfg, now, not fresh))
    _disabled(data, as_json)
    if as_json:
        print_json(data)
        return
    cfg = settings(config)
    for line in forecast_lines(data, cfg.zone):
        typer.echo(line)


# ---------------------------------------------------------------------------- baselines


@baseline_app.command("capture")
def baseline_capture(
    name: Annotated[str | None, typer.Option("--name", help="A name to find it by.")] = None,
    window: Annotated[
        str | None, typer.Option("--window", help="How far back to measure (default 24h).")
    ] = None,
    actor: ActorOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Measure latency per probe, error rate and resource use, and store them as a baseline."""
    length = _window(window)
    who = _actor(actor)
    data = _run(
        config,
        lambda store, cfg, now: service.capture_baseline(
            store, cfg, now, who, name, length or cfg.analytics.baseline.window
        ),
    )
    if as_json:
        print_json(data)
        return
    body = data["data"]
    typer.echo(
        f"baseline #{data['id']} “{data['name']}” captured: {len(body['probes'])} probes with "
        f"latency, {body['errors']['per_hour']} error events per hour, "
        f"{len(body['resources'])} host metrics, {len(body['requests'])} request sources"
    )


@baseline_app.command("list")
def baseline_list(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """The baselines, newest first."""
    items = _run(config, lambda store, cfg, now: service.list_baselines(store))
    if as_json:
        print_json(items)
        return
    if not items:
        typer.echo("no baselines yet: nachtwacht baseline capture")
        return
    cfg = settings(config)
    for b in items:
        when = datetime.fromtimestamp(b["captured_at"], cfg.zone).strftime("%Y-%m-%d %H:%M")
        hours = (b["window_end"] - b["window_start"]) / 3600
        typer.echo(
            f"#{b['id']:<4} {when}  {hours:g} h  {b['probes']:>4} probes  "
            f"{b['errors_per_hour']} errors/h  by {b['captured_by']}  {b['name']}"
        )


@baseline_app.command("compare")
def baseline_compare(
    against: Annotated[
        int | None, typer.Option("--against", min=1, help="A baseline id (default: latest).")
    ] = None,
    window: Annotated[
        str | None, typer.Option("--window", help="Default: the baseline's own length.")
    ] = None,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 when anything regressed.")] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """The last window against a baseline: which probes, error rates or resources regressed."""
    length = _window(window)
    data = _run(
        config,
        lambda store, cfg, now: service.compare_baseline(store, cfg, now, against, length),
    )
    if as_json:
        print_json(data)
    else:
        for line in compare_lines(data):
            typer.echo(line)
    if check and data["regressions"]:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------- flags


@flags_app.command("list")
def flags_list(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """The flags, whether they are on, and who switched them last."""
    items = _run(config, lambda store, cfg, now: service.list_flags(store))
    if as_json:
        print_json(items)
        return
    cfg = settings(config)
    for f in items:
        state = "on " if f["enabled"] else "off"
        who = ""
        if f["updated_at"] is not None:
            when = datetime.fromtimestamp(f["updated_at"], cfg.zone).strftime("%Y-%m-%d %H:%M")
            who = f"  (set {when} by {f['updated_by']})"
        typer.echo(f"{state}  {f['name']}{who}")
        typer.echo(f"     {f['description']}")


@flags_app.command("set")
def flags_set(
    name: Annotated[str, typer.Argument(help="The flag.")],
    value: Annotated[str, typer.Argument(help="on or off.")],
    actor: ActorOption = None,
    config: ConfigOption = None,
) -> None:
    """Switch a flag; a running server follows within `analytics.flag_cache` seconds."""
    flags.check_name(name)
    enabled = flags.parse_switch(value)
    who = _actor(actor)

    def work(store: Store, cfg: Settings, now: float) -> bool:
        before = {f["name"]: f["enabled"] for f in service.list_flags(store)}[name]
        service.set_flag(store, name, enabled, who, now)
        return before

    was = _run(config, work)
    typer.echo(
        f"{name} is now {'on' if enabled else 'off'} (was {'on' if was else 'off'}); audited as "
        f"flag.set by {who}"
    )


# ---------------------------------------------------------------------------- cache


@cache_app.command("clear")
def cache_clear(
    pattern: Annotated[
        str | None, typer.Argument(help="A glob on the keys, e.g. 'analytics_errors*'.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Delete cached analytics results (all, or those whose key matches PATTERN)."""
    n = _run(config, lambda store, cfg, now: service.clear_cache(store, pattern))
    what = f" matching {pattern}" if pattern else ""
    typer.echo(f"cleared {n} cached result{'s' if n != 1 else ''}{what}")


@cache_app.command("list")
def cache_list(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """The cached results and when they expire."""

    def work(store: Store, cfg: Settings, now: float) -> list[dict[str, Any]]:
        with store.connect() as conn:
            return cache.entries(conn, now)

    items = _run(config, work)
    if as_json:
        print_json(items)
        return
    if not items:
        typer.echo("the analytics cache is empty")
    now = SystemClock().now()
    for e in items:
        left = e["expires_at"] - now
        state = f"expires in {left:.0f} s" if left > 0 else "expired"
        typer.echo(f"{e['key']}  ({state})")
