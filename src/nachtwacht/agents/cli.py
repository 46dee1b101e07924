"""`nachtwacht agent` (the process at another site) and `nachtwacht agent-token` (its tokens)."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from nachtwacht.cli.common import ConfigOption, JsonOption, fail, print_json, settings

agent_token_app = typer.Typer(
    help="Tokens for remote probe agents, one location each: create (shown once), list, revoke.",
    no_args_is_help=True,
)


def _actor() -> str:
    try:
        name = os.environ.get("USER") or getpass.getuser()
    except OSError:
        name = "unknown"
    return f"cli:{name}"


def _in_store(config: str | None, work):  # noqa: ANN001, ANN202 - (conn, now) -> T
    from nachtwacht.clock import SystemClock
    from nachtwacht.store.db import Store, StoreError

    cfg = settings(config)
    try:
        store = Store(cfg.store.url)
        store.migrate()
        try:
            with store.begin() as conn:
                return work(conn, SystemClock().now())
        finally:
            store.dispose()
    except StoreError as exc:
        fail(f"cannot use the store: {exc}", 2)


@agent_token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="What the token is for, e.g. 'office-agent'.")],
    location: Annotated[
        str, typer.Option("--location", "-l", help="The one location the agent reports for.")
    ],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an agent token: it fetches and reports the probes of one location, nothing else."""
    from nachtwacht.agents import service

    if location == settings(config).server.location:
        fail(f"'{location}' is the server's own location (server.location); name the agent's", 2)
    row = _in_store(
        config,
        lambda conn, now: service.create_agent_token(conn, name, location, now, actor=_actor()),
    )
    if as_json:
        print_json(row)
        return
    typer.echo(f"agent token #{row['id']} '{row['name']}' for location {row['location']}:")
    typer.echo(row["token"])
    typer.echo("store it now: it is not shown again. Run: nachtwacht agent --server URL --token …")


@agent_token_app.command("list")
def token_list(
    revoked: Annotated[bool, typer.Option("--all", help="Include revoked tokens.")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Agent tokens (never their secrets)."""
    from nachtwacht.agents import service

    rows = _in_store(
        config, lambda conn, _now: service.list_agent_tokens(conn, include_revoked=revoked)
    )
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no agent tokens")
    for r in rows:
        state = "revoked" if r["revoked_at"] else "active"
        typer.echo(f"#{r['id']:<5} {r['name']:<24} {r['location']:<12} {state}")


@agent_token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(metavar="ID", help="The token's id.")],
    config: ConfigOption = None,
) -> None:
    """Revoke an agent token: its agent is refused from now on."""
    from nachtwacht.agents import service

    row = _in_store(
        config,
        lambda conn, now: service.revoke_agent_token(conn, token_id, now, actor=_actor()),
    )
    typer.echo(f"revoked agent token #{row['id']} '{row['name']}'")


def agent(
    server: Annotated[str, typer.Option("--server", help="The Nachtwacht server's URL.")],
    token: Annotated[
        str,
        typer.Option(
            "--token",
            envvar="NACHTWACHT_AGENT_TOKEN",
            help="An agent token (nachtwacht agent-token create); or $NACHTWACHT_AGENT_TOKEN.",
        ),
    ],
    spool: Annotated[
        Path,
        typer.Option("--spool", help="Where results wait until the server has them."),
    ] = Path("agent-spool"),
    refresh: Annotated[
        float, typer.Option(help="Seconds between asking for the probe list.", min=1.0)
    ] = 10.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run probes at this site for a Nachtwacht server and send it their results.

    Results are spooled (fsync'd) here first: while the server is unreachable they wait, and
    go in order when it is back; a restart (even kill -9) loses none.
    """
    from nachtwacht.agents.runner import Agent, AgentOptions
    from nachtwacht.spool.log import SpoolError

    if not token.startswith("nwa_"):
        fail("--token must be an agent token (nwa_…): nachtwacht agent-token create", 2)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        runner = Agent(AgentOptions(server, token, spool, refresh=refresh))
    except SpoolError as exc:
        fail(str(exc), 1)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await runner.run(stop)

    asyncio.run(main())
