"""`nachtwacht maintenance ...` and `nachtwacht silence ...`, working straight on the store.

A running `nachtwacht serve` sees a new window or silence at its next alert: muting is read
from the store each time an alert opens.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy import Connection

from nachtwacht.alerts import silences, windows
from nachtwacht.cli.common import ConfigOption, JsonOption, fail, print_json, settings
from nachtwacht.cli.common import cli_actor as _actor
from nachtwacht.clock import Clock, SystemClock
from nachtwacht.config.schema import Settings
from nachtwacht.store.db import Store, StoreError

# tests replace this with a FakeClock
CLOCK: Clock = SystemClock()
T = TypeVar("T")

maintenance_app = typer.Typer(
    help="Maintenance windows: mute paging (never recording) for a while.", no_args_is_help=True
)
silence_app = typer.Typer(
    help="Silences: mute paging for one probe, component or alert for a while.",
    no_args_is_help=True,
)

ActorOption = Annotated[
    str | None, typer.Option("--actor", help="Who is doing this (default: $USER).")
]
DurationOption = Annotated[
    str | None, typer.Option("--duration", "-d", help="How long, e.g. 30m, 2h, 1d.")
]
UntilOption = Annotated[
    str | None,
    typer.Option("--until", help="End time: 'YYYY-MM-DD HH:MM' (site timezone) or ISO 8601."),
]
StartOption = Annotated[
    str | None,
    typer.Option("--start", help="Start time (default: now), same formats as --until."),
]
CommentOption = Annotated[str, typer.Option("--comment", help="Why (shown to responders).")]
AllOption = Annotated[bool, typer.Option("--all", help="Include ended and past entries.")]


def _run(
    config: str | None, work: Callable[[Connection, Settings, float], T], write: bool
) -> tuple[T, Settings]:
    """Run `work` in one transaction (or a read connection); refusals exit 1, touching nothing."""
    cfg = settings(config)
    store = Store(cfg.store.url)
    try:
        store.migrate()
        with store.begin() if write else store.connect() as conn:
            return work(conn, cfg, CLOCK.now()), cfg
    except windows.WindowError as exc:
        fail(_cli_message(str(exc)), 1)
    except StoreError as exc:
        fail(f"cannot use the store: {exc}", 2)
    finally:
        store.dispose()


# the service names API fields; on the command line the same thing is an option
_OPTION_FOR = {
    "starts_at:": "--start:",
    "ends_at:": "--until:",
    "duration:": "--duration:",
    "probes:": "--probe:",
    "probe:": "--probe:",
    "components:": "--component:",
    "created_by:": "--actor:",
    "comment:": "--comment:",
}


def _cli_message(message: str) -> str:
    for field, option in _OPTION_FOR.items():
        if message.startswith(field):
            return option + message[len(field) :]
    return message


def _local(value: str | None, cfg: Settings) -> str:
    if not value:
        return "-"
    dt = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(cfg.zone)
    return dt.strftime("%Y-%m-%d %H:%M")


def _scope(components: list[str], probes: list[str]) -> str:
    parts = [f"component {c}" for c in components] + [f"probe {p}" for p in probes]
    return ", ".join(parts) or "the whole site"


def _span(
    now: float, cfg: Settings, start: str | None, until: str | None, duration: str | None
) -> tuple[float, float]:
    return windows.span(
        now,
        cfg.zone,
        start=start,
        end=until,
        duration=duration,
        start_field="--start",
        end_field="--until",
        duration_field="--duration",
    )


# ---------------------------------------------------------------------------- maintenance


@maintenance_app.command("add")
def add_maintenance(
    name: Annotated[str, typer.Argument(help="What the maintenance is, e.g. 'MariaDB upgrade'.")],
    duration: DurationOption = None,
    until: UntilOption = None,
    start: StartOption = None,
    component: Annotated[
        list[str] | None,
        typer.Option("--component", help="Component to mute (repeatable; none: whole site)."),
    ] = None,
    probe: Annotated[
        list[str] | None, typer.Option("--probe", help="Probe to mute (repeatable).")
    ] = None,
    comment: CommentOption = "",
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a one-off maintenance window (it always ends: give --duration or --until)."""

    def work(conn: Connection, cfg: Settings, now: float) -> dict[str, Any]:
        starts_at, ends_at = _span(now, cfg, start, until, duration)
        window_id = windows.add_window(
            conn,
            cfg,
            name=name,
            starts_at=starts_at,
            ends_at=ends_at,
            now=now,
            created_by=_actor(actor),
            components=component or [],
            probes=probe or [],
            comment=comment,
        )
        row = windows.get_window(conn, window_id)
        assert row is not None
        return windows.store_window_view(row, now)

    view, cfg = _run(config, work, write=True)
    if as_json:
        print_json(view)
        return
    typer.echo(
        f"maintenance #{view['id']} '{view['name']}' ({view['state']}): "
        f"{_local(view['starts_at'], cfg)} → {_local(view['ends_at'], cfg)} {cfg.timezone}, "
        f"muting {_scope(view['components'], view['probes'])}"
    )


@maintenance_app.command("list")
def list_maintenance(
    include_past: AllOption = False, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """Config windows (with their next occurrence) and added windows, active or upcoming."""

    def work(conn: Connection, cfg: Settings, now: float) -> list[dict[str, Any]]:
        return windows.list_windows(conn, cfg, now, include_past=include_past)

    rows, cfg = _run(config, work, write=False)
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no maintenance windows active or upcoming")
        return
    for w in rows:
        ident = f"#{w['id']}" if w["id"] is not None else "config"
        when = f"{_local(w['starts_at'], cfg)} → {_local(w['ends_at'], cfg)}"
        if w["every"]:
            when = f"every {w['every']} (next {when})"
        typer.echo(
            f"{ident:<7} {w['state'].upper():<9} {w['name']}  {when}  "
            f"[{_scope(w['components'], w['probes'])}]"
            + (f"  by {w['created_by']}" if w["source"] == "store" else "")
            + (f"  — {w['comment']}" if w["comment"] else "")
        )


@maintenance_app.command("end")
def end_maintenance(
    window_id: Annotated[int, typer.Argument(metavar="ID", help="Window id (from `list`).")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """End a window now (a window that has not started yet is cancelled)."""

    def work(conn: Connection, _cfg: Settings, now: float) -> dict[str, Any]:
        return windows.store_window_view(windows.end_window(conn, window_id, now), now)

    view, cfg = _run(config, work, write=True)
    if as_json:
        print_json(view)
        return
    typer.echo(f"maintenance #{view['id']} '{view['name']}' {view['state']}; paging is live again")


# ---------------------------------------------------------------------------- silences


@silence_app.command("add")
def add_silence(
    probe: Annotated[str | None, typer.Option("--probe", help="Silence this probe.")] = None,
    component: Annotated[
        str | None, typer.Option("--component", help="Silence every alert of a component.")
    ] = None,
    fingerprint: Annotated[
        str | None, typer.Option("--fingerprint", help="Silence one alert (e.g. am:1a30ba71…).")
    ] = None,
    everything: Annotated[bool, typer.Option("--all", help="Silence everything.")] = False,
    duration: DurationOption = None,
    until: UntilOption = None,
    start: StartOption = None,
    comment: CommentOption = "",
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Mute paging for one probe, component or alert fingerprint (or --all) for a while."""
    given = [
        m
        for m in (
            f"probe:{probe}" if probe is not None else None,
            f"component:{component}" if component is not None else None,
            f"fingerprint:{fingerprint}" if fingerprint is not None else None,
            "all" if everything else None,
        )
        if m is not None
    ]
    if len(given) != 1:
        fail("give exactly one of --probe, --component, --fingerprint or --all", 1)

    def work(conn: Connection, cfg: Settings, now: float) -> dict[str, Any]:
        starts_at, ends_at = _span(now, cfg, start, until, duration)
        silence_id = silences.add_silence(
            conn,
            cfg,
            matcher=given[0],
            starts_at=starts_at,
            ends_at=ends_at,
            now=now,
            created_by=_actor(actor),
            comment=comment,
        )
        row = silences.get_silence(conn, silence_id)
        assert row is not None
        return silences.silence_view(row, now)

    view, cfg = _run(config, work, write=True)
    if as_json:
        print_json(view)
        return
    typer.echo(
        f"silence #{view['id']} {view['matcher']} ({view['state']}) until "
        f"{_local(view['ends_at'], cfg)} {cfg.timezone}"
    )


@silence_app.command("list")
def list_silences(
    include_past: AllOption = False, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """Silences that are active or upcoming."""

    def work(conn: Connection, _cfg: Settings, now: float) -> list[dict[str, Any]]:
        return silences.list_silences(conn, now, include_past=include_past)

    rows, cfg = _run(config, work, write=False)
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no silences active or upcoming")
        return
    for s in rows:
        typer.echo(
            f"#{s['id']:<5} {s['state'].upper():<9} {s['matcher']}  "
            f"{_local(s['starts_at'], cfg)} → {_local(s['ends_at'], cfg)}  by {s['created_by']}"
            + (f"  — {s['comment']}" if s["comment"] else "")
        )


@silence_app.command("expire")
def expire_silence(
    silence_id: Annotated[int, typer.Argument(metavar="ID", help="Silence id (from `list`).")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """End a silence now."""

    def work(conn: Connection, _cfg: Settings, now: float) -> dict[str, Any]:
        return silences.silence_view(silences.expire_silence(conn, silence_id, now), now)

    view, cfg = _run(config, work, write=True)
    if as_json:
        print_json(view)
        return
    typer.echo(f"silence #{view['id']} {view['matcher']} expired; paging is live again")
