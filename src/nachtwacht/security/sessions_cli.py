"""`nachtwacht security sessions` and `nachtwacht security end-sessions`: a Frappe site's
active sessions, listed and ended (security/frappe_sessions.py).

Plain functions plus a small Typer app, to be attached to the `security` group
(security/cli.py). This module is not a door by name, so it imports nothing of `nachtwacht.cli`
(the import contract): a `SessionsError` is a `Problem`, which the root command turns into one
`error:` line and its exit code; the config is loaded here the way `cli.common.settings` does.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from typing import Annotated, Any

import typer

from nachtwacht.security import frappe_sessions as fs

SiteOption = Annotated[
    str | None,
    typer.Option(
        "--site", help="The Frappe site (default: runbooks.vars.frappe_site, else `site`)."
    ),
]
DbUrlOption = Annotated[
    str | None,
    typer.Option(
        "--db-url",
        help="The site's database URL (default: read from the bench's site_config.json).",
    ),
]
RedisOption = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        help="The bench's Redis cache (default: redis_cache of common_site_config.json).",
    ),
]
ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config", "-c", help="Config file (default: $NACHTWACHT_CONFIG or ./nachtwacht.yaml)."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _settings(config: str | None) -> Any:
    from nachtwacht.config.loader import ConfigError, load_config

    try:
        return load_config(config)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2) from None


def _actor() -> str:
    try:
        return "cli:" + (os.environ.get("USER") or getpass.getuser())
    except OSError:
        return "cli"


def sessions(
    site: SiteOption = None,
    limit: Annotated[
        int, typer.Option("--limit", help=f"At most this many (1 to {fs.MAX_LIMIT}).")
    ] = fs.DEFAULT_LIMIT,
    db_url: DbUrlOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """A Frappe site's active sessions, most recently active first."""
    found = fs.resolve_site(_settings(config), site, db_url=db_url)
    rows = fs.list_sessions(found, limit)
    if as_json:
        sys.stdout.write(json.dumps([r.as_dict() for r in rows], indent=2) + "\n")
        return
    if not rows:
        typer.echo(f"no sessions on {found.name}")
        return
    typer.echo(f"{'USER':<32} {'ADDRESS':<16} {'LAST UPDATE':<20} {'DEVICE':<8} SID")
    for r in rows:
        typer.echo(
            f"{r.user[:32]:<32} {(r.ip or '-')[:16]:<16} {(r.last_update or '-')[:20]:<20} "
            f"{(r.device or '-')[:8]:<8} {r.sid_prefix}…"
        )
    typer.echo(f"{len(rows)} session(s) on {found.name}")


def end_sessions(
    user: Annotated[
        str | None, typer.Option("--user", help="End this user's sessions (Frappe's user id).")
    ] = None,
    all_but_administrator: Annotated[
        bool,
        typer.Option("--all-but-administrator", help="End every session but Administrator's."),
    ] = False,
    incident: Annotated[
        int | None, typer.Option("--incident", help="Record it on this incident's timeline.")
    ] = None,
    site: SiteOption = None,
    db_url: DbUrlOption = None,
    redis_url: RedisOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """End a Frappe site's sessions as Frappe's logout does: rows and cache; audited."""
    from nachtwacht.clock import SystemClock
    from nachtwacht.store.db import Store

    if (user is None) == (not all_but_administrator):
        typer.echo("error: give --user USER or --all-but-administrator", err=True)
        raise typer.Exit(2)
    cfg = _settings(config)
    found = fs.resolve_site(cfg, site, db_url=db_url, redis_url=redis_url)
    store = Store(cfg.store.url)
    try:
        store.migrate()
        with store.connect() as conn:
            fs.check_incident(conn, incident)  # an unknown incident: refused, nothing ended
        ended = fs.end_sessions(found, user=user, all_but_administrator=all_but_administrator)
        try:
            with store.begin() as conn:
                fs.record(conn, ended, _actor(), SystemClock().now(), incident)
        except Exception as exc:  # noqa: BLE001 - the sessions are ended: say so regardless
            typer.echo(f"warning: {fs.describe(ended)}, but it was not recorded: {exc}", err=True)
            raise typer.Exit(1) from None
    finally:
        store.dispose()
    if as_json:
        sys.stdout.write(json.dumps(ended.as_dict(), indent=2) + "\n")
    else:
        typer.echo(fs.describe(ended))
    if ended.cache_error:
        raise typer.Exit(1)


sessions_app = typer.Typer(help="A Frappe site's active sessions.", no_args_is_help=True)
sessions_app.command("sessions")(sessions)
sessions_app.command("end-sessions")(end_sessions)
