"""`nachtwacht security ...`: block and unblock addresses, list blocks, the HTTP lockdown; the
security report; a Frappe site's sessions.

Each change is committed as a row first, then applied to nftables here and now (the running
server's `security-respond` module would do it within `security.respond.interval` anyway, and
does if this command dies between the two); the command reports what the firewall took, after
its commit. Needs the rights to run `nft` (root or CAP_NET_ADMIN).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy import Connection

from nachtwacht.cli.common import (
    ConfigOption,
    JsonOption,
    cli_actor,
    fail,
    open_store,
    print_json,
    settings,
)
from nachtwacht.cli.common import cli_actor as _actor
from nachtwacht.clock import Clock, SystemClock
from nachtwacht.config.schema import Settings
from nachtwacht.durations import parse_duration
from nachtwacht.security import applier as applier_mod
from nachtwacht.security import blocks, sessions_cli
from nachtwacht.security.firewall import Firewall
from nachtwacht.store.db import Store, StoreError

# tests replace these: a FakeClock, and a firewall of their own (None: nft as configured)
CLOCK: Clock = SystemClock()
FIREWALL: Firewall | None = None
T = TypeVar("T")

security_app = typer.Typer(
    help="Security: the report, address blocks and lockdown, a Frappe site's sessions.",
    no_args_is_help=True,
)

ActorOption = Annotated[
    str | None, typer.Option("--actor", help="Who is doing this (default: $USER).")
]
ForOption = Annotated[
    str | None,
    typer.Option("--for", help="How long, e.g. 30m, 1h, 1d (default: security.respond)."),
]
ReasonOption = Annotated[str | None, typer.Option("--reason", help="Why (audit log, timeline).")]
IncidentOption = Annotated[
    str | None,
    typer.Option("--incident", help="The incident this belongs to (its number; '' for none)."),
]


def _incident(value: str | None) -> int | None:
    """The incident's number; empty means none, as a runbook run without one fills it in."""
    if value is None or not value.strip():
        return None
    try:
        number = int(value)
    except ValueError:
        fail(f"--incident: '{value[:40]}' is not an incident number", 2)
    if not 1 <= number <= 2**31 - 1:
        fail(f"--incident: {number} is not an incident number", 2)
    return number


def _duration(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        fail(f"--for: {exc}", 2)


def _run(
    config: str | None, work: Callable[[Connection, Settings, float], T], write: bool
) -> tuple[T, Settings, Store]:
    cfg = settings(config)
    store = Store(cfg.store.url)
    try:
        store.migrate()
        with store.begin() if write else store.connect() as conn:
            return work(conn, cfg, CLOCK.now()), cfg, store
    except StoreError as exc:
        store.dispose()
        fail(f"cannot use the store: {exc}", 2)
    except BaseException:
        store.dispose()
        raise


def _apply(store: Store, cfg: Settings, ids: list[int]) -> applier_mod.Pass:
    """Apply (or remove) these rows now, after their commit."""
    firewall = FIREWALL or blocks.firewall_for(cfg.security.respond)
    applier = applier_mod.Applier(store, firewall, CLOCK, zone=cfg.zone)
    try:
        return applier.run(only=ids)
    finally:
        store.dispose()


def _local(value: str | None, cfg: Settings) -> str:
    if not value:
        return "-"
    dt = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(cfg.zone)
    return dt.strftime("%Y-%m-%d %H:%M")


def _outcome(done: applier_mod.Pass, store_view: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(store_view[0] if len(store_view) == 1 else store_view)
    if done.errors:
        fail("; ".join(done.errors), 1)


def _views(cfg: Settings, ids: list[int]) -> list[dict[str, Any]]:
    store = Store(cfg.store.url)
    try:
        with store.connect() as conn:
            now = CLOCK.now()
            return [blocks.get_block(conn, i, now) for i in ids]
    except StoreError as exc:
        fail(f"cannot use the store: {exc}", 2)
    finally:
        store.dispose()


@security_app.command("block")
def block(
    address: Annotated[str, typer.Argument(help="An IP address or network, e.g. 203.0.113.9.")],
    duration: ForOption = None,
    reason: ReasonOption = None,
    incident: IncidentOption = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Block even loopback, this host or the allow-list."),
    ] = False,
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Block an address in nftables for a while; it is unblocked by itself when the time is up."""
    seconds = _duration(duration)
    incident_id = _incident(incident)

    def work(conn: Connection, cfg: Settings, now: float) -> int:
        return blocks.block(
            conn,
            cfg.security.respond,
            address,
            duration=seconds,
            reason=reason,
            actor=_actor(actor),
            now=now,
            incident_id=incident_id,
            force=force,
        )

    block_id, cfg, store = _run(config, work, write=True)
    done = _apply(store, cfg, [block_id])
    [view] = _views(cfg, [block_id])
    if not as_json and view["state"] == "active":
        typer.echo(
            f"blocked {view['address']} until {_local(view['until'], cfg)} {cfg.timezone} "
            f"(block #{view['id']})"
        )
    elif not as_json and not done.errors:
        typer.echo(f"block #{view['id']} of {view['address']} is {view['state']}")
    _outcome(done, [view], as_json)


@security_app.command("unblock")
def unblock(
    address: Annotated[str, typer.Argument(help="The address or network to unblock.")],
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Lift an address's block now."""

    def work(conn: Connection, cfg: Settings, now: float) -> list[int]:
        return blocks.unblock(conn, address, _actor(actor), now)

    ids, cfg, store = _run(config, work, write=True)
    done = _apply(store, cfg, ids)
    views = _views(cfg, ids)
    if not as_json:
        for v in views:
            if v["state"] == "removed" and v["applied_at"] is None:
                typer.echo(f"block #{v['id']} of {v['address']} was never applied; dismissed")
            elif v["state"] == "removed":
                typer.echo(f"unblocked {v['address']} (block #{v['id']})")
            else:
                typer.echo(f"block #{v['id']} of {v['address']} is {v['state']}")
    _outcome(done, views, as_json)


@security_app.command("blocks")
def list_blocks(
    include_all: Annotated[bool, typer.Option("--all", help="The history too.")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """The blocks in force (and waiting to be applied or removed); --all for the history."""

    def work(
        conn: Connection, cfg: Settings, now: float
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return (
            blocks.list_blocks(conn, now, include_all=include_all),
            blocks.list_blocks(conn, now, lockdown_rows=True),
        )

    (rows, lockdown_rows), cfg, store = _run(config, work, write=False)
    store.dispose()
    if as_json:
        print_json(rows)
        return
    ports = [r["address"].removeprefix("tcp/") for r in lockdown_rows if r["rule"] == "lockdown"]
    if ports:
        until = _local(lockdown_rows[0]["until"], cfg)
        typer.echo(f"lockdown on: TCP ports {', '.join(ports)} until {until} (lockdown --off)")
    if not rows:
        typer.echo("no blocks" + ("" if include_all else " in force"))
        return
    typer.echo(f"{'ADDRESS':<20} {'STATE':<9} {'SINCE':<16} {'UNTIL':<16} {'BY':<12} REASON")
    for r in rows:
        typer.echo(
            f"{r['address']:<20} {r['state']:<9} {_local(r['since'], cfg):<16} "
            f"{_local(r['until'], cfg):<16} {r['created_by'][:12]:<12} "
            + (r["reason"] or "").replace("\n", " ")[:60]
            + (f"  [{r['error'][:80]}]" if r["error"] else "")
        )


@security_app.command("lockdown")
def lockdown(
    port: Annotated[
        list[int] | None, typer.Option("--port", help="A TCP port to close (repeatable).")
    ] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option("--allow", help="A network that may still connect (repeatable)."),
    ] = None,
    off: Annotated[bool, typer.Option("--off", help="End the lockdown now.")] = False,
    duration: ForOption = None,
    reason: ReasonOption = None,
    incident: IncidentOption = None,
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Close TCP ports to everyone but an allow-list (loopback always passes); --off ends it."""
    seconds = _duration(duration)
    incident_id = _incident(incident)

    def work(conn: Connection, cfg: Settings, now: float) -> list[int]:
        if off:
            return blocks.lockdown_off(conn, _actor(actor), now)
        return blocks.lockdown(
            conn,
            cfg.security.respond,
            ports=port or [],
            allow=allow or [],
            duration=seconds,
            reason=reason,
            actor=_actor(actor),
            now=now,
            incident_id=incident_id,
        )

    ids, cfg, store = _run(config, work, write=True)
    done = _apply(store, cfg, ids)
    views = _views(cfg, ids)
    if not as_json:
        ports = [v["address"].removeprefix("tcp/") for v in views if v["rule"] == blocks.LOCKDOWN]
        allowed = [v["address"] for v in views if v["rule"] == blocks.LOCKDOWN_ALLOW]
        states = {v["state"] for v in views}
        if off and states == {"removed"}:
            typer.echo(f"lockdown off: TCP ports {', '.join(ports)} open again")
        elif not off and states == {"active"}:
            until = _local(views[0]["until"], cfg)
            typer.echo(
                f"lockdown: TCP ports {', '.join(ports)} closed until {until} {cfg.timezone} "
                f"except for loopback{', ' if allowed else ''}{', '.join(allowed)}"
            )
        else:
            typer.echo(f"lockdown: {', '.join(sorted(states))}")
    _outcome(done, views, as_json)


@security_app.command("report")
def report(
    days: Annotated[int, typer.Option("--days", min=1, max=366, help="Days up to now.")] = 7,
    fmt: Annotated[str, typer.Option("--format", "-f", help="md, html or json.")] = "md",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")
    ] = None,
    actor: Annotated[
        str | None, typer.Option("--actor", help="Who asks for it (default: $USER).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Findings by rule and address, top addresses and paths, logins, blocks, Nachtwacht's own
    audit events, and what changed since the last report."""
    if fmt not in ("md", "html", "json"):
        fail("--format must be md, html or json", 2)
    from nachtwacht.clock import SystemClock
    from nachtwacht.security import report as security_report
    from nachtwacht.security.report_render import render

    cfg = settings(config)
    who = f"cli:{cli_actor(actor)}"
    with open_store(cfg) as store, store.begin() as conn:
        now = SystemClock().now()
        built = security_report.build(conn, now, days, cfg.security)
        text = render(built, fmt, cfg.site, cfg.zone)
        if output is not None:
            try:
                output.parent.mkdir(parents=True, exist_ok=True)
                output.write_text(text, encoding="utf-8")
            except OSError as exc:
                fail(f"cannot write {output}: {exc.strerror or exc}", 1)
        security_report.record(conn, built, who, now, fmt)
    if output is None:
        typer.echo(text, nl=False)
    else:
        typer.echo(f"wrote {output}", err=True)


security_app.command("sessions")(sessions_cli.sessions)
security_app.command("end-sessions")(sessions_cli.end_sessions)
