"""The `nachtwacht` command."""

from __future__ import annotations

import inspect
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from typer.core import TyperGroup

from nachtwacht import __version__
from nachtwacht.agents import cli as agents_cli
from nachtwacht.alerts.cli import maintenance_app, silence_app
from nachtwacht.analytics import cli as analytics_cli
from nachtwacht.auth import cli as auth_cli
from nachtwacht.backup import cli as backup_cli
from nachtwacht.checklist import cli as checklist_cli
from nachtwacht.cli.common import (
    STDOUT_CLOSED_EXIT,
    ConfigOption,
    config_path,
    drop_stdout,
    fail,
    settings,
    state,
)
from nachtwacht.config import Settings, starter
from nachtwacht.config.loader import config_warnings
from nachtwacht.errors import cli as errors_cli
from nachtwacht.evidence import cli as evidence_cli
from nachtwacht.incidents.cli import incident_app
from nachtwacht.notify.cli import notify_app
from nachtwacht.notify.reach import config_warnings as reach_warnings
from nachtwacht.oncall import cli as oncall_cli
from nachtwacht.probes import cli as probes_cli
from nachtwacht.problems import Problem
from nachtwacht.reviews import cli as reviews_cli
from nachtwacht.runbooks import cli as runbooks_cli
from nachtwacht.watchdog import cli as watchdog_cli


class _Nachtwacht(TyperGroup):
    """The root command: a domain's refusal (`Problem`) becomes one `error:` line and its exit
    code here, the one place for every command, however it is invoked (`main()`, a test's
    CliRunner); a command lets a `Problem` propagate instead of translating it itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _reflow_help(self)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """`--help` anywhere before `--` shows the help of the command named and runs nothing.

        Click takes `--help` right after an option that wants a value as that value
        (`incident resolve 3 -m --help` would resolve incident 3 with the message
        "--help"); here it is help wherever it is typed. `--message=--help` still says it.
        """
        words = args[: args.index("--")] if "--" in args else args
        if "--help" in words:
            args = [*_command_words(self, words), "--help"]
        return super().parse_args(ctx, args)

    # ctx is the vendored click's Context (typer.Context is a subclass of it)
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Problem as exc:
            where = f" ({exc.field})" if exc.field else ""
            typer.echo(f"error: {exc.message}{where}", err=True)
            raise typer.Exit(exc.exit_code) from None


def _command_words(group: Any, words: list[str]) -> list[str]:
    """The command names among `words`: the path from the root to the command they name."""
    path: list[str] = []
    command = group
    for word in words:
        sub = getattr(command, "commands", {}).get(word)
        if sub is not None:
            path.append(word)
            command = sub
    return path


def _reflow_help(command: Any) -> None:
    """Join the lines of each help paragraph of `command` and every command below it.

    Typer's help keeps a docstring's line breaks after its first paragraph, so a paragraph
    wrapped at 100 columns in the source came out ragged at 80; joined, it wraps to the
    terminal. A paragraph that starts with \b, or whose lines are a list, keeps its lines.
    """
    if command.help:
        text, cut, rest = inspect.cleandoc(command.help).partition("\f")
        command.help = "\n\n".join(_join(p) for p in text.split("\n\n")) + cut + rest
    for sub in getattr(command, "commands", {}).values():
        _reflow_help(sub)


def _join(paragraph: str) -> str:
    lines = paragraph.splitlines()
    if paragraph.startswith("\b") or any(line.lstrip().startswith(("- ", "* ")) for line in lines):
        return paragraph
    return " ".join(line.strip() for line in lines)


app = typer.Typer(
    help="Nachtwacht: monitoring and emergency response for small operations teams.",
    cls=_Nachtwacht,
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Check configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(probes_cli.probes_app, name="probes")
app.add_typer(incident_app, name="incident")
app.add_typer(maintenance_app, name="maintenance")
app.add_typer(silence_app, name="silence")
app.add_typer(notify_app, name="notify")
app.add_typer(auth_cli.user_app, name="user")
app.add_typer(auth_cli.token_app, name="token")
app.add_typer(auth_cli.ingest_key_app, name="ingest-key")
app.command("audit")(auth_cli.audit)
oncall_app = typer.Typer(
    help="Who is on call now and next; `oncall override` manages overrides.",
    invoke_without_command=True,
)
oncall_app.callback()(oncall_cli.oncall)
oncall_app.add_typer(oncall_cli.override_app, name="override")
app.add_typer(oncall_app, name="oncall")
app.command("status")(probes_cli.status)
app.command("check")(probes_cli.check)
app.command("agent")(agents_cli.agent)
app.add_typer(agents_cli.agent_token_app, name="agent-token")
app.add_typer(errors_cli.errors_app, name="errors")
app.add_typer(errors_cli.project_app, name="project")
app.add_typer(analytics_cli.analytics_app, name="analytics")
app.add_typer(analytics_cli.baseline_app, name="baseline")
app.add_typer(analytics_cli.flags_app, name="flags")
app.add_typer(analytics_cli.cache_app, name="cache")
app.add_typer(runbooks_cli.runbook_app, name="runbook")
app.add_typer(evidence_cli.evidence_app, name="evidence")
app.add_typer(reviews_cli.report_app, name="report")
app.add_typer(reviews_cli.followup_app, name="followup")
app.add_typer(reviews_cli.postmortem_app, name="postmortem")
app.add_typer(backup_cli.backup_app, name="backup")
app.add_typer(backup_cli.store_app, name="store")
# single commands: each package's cli.py defines a function named for the command
for _module, _name in (
    (checklist_cli, "verify"),
    (backup_cli, "export"),
    (watchdog_cli, "doctor"),
):
    if hasattr(_module, _name):
        app.command(_name)(getattr(_module, _name))


@app.callback()
def root(
    ctx: typer.Context,
    config: ConfigOption = None,
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    state.config = config


@app.command()
def init(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write.")] = Path(
        "nachtwacht.yaml"
    ),
    preset: Annotated[str, typer.Option(help="`host` (this machine) or `frappe`.")] = "host",
    site: Annotated[str | None, typer.Option(help="Frappe site name (preset frappe).")] = None,
    bench_path: Annotated[
        Path | None, typer.Option("--bench-path", help="Frappe bench directory (preset frappe).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter config that monitors this host and the services it finds."""
    if output.exists() and not force:
        fail(f"{output} exists; use --force to overwrite it", 1)
    if preset == "frappe":
        if not site or bench_path is None:
            fail("--preset frappe needs --site SITE and --bench-path PATH", 2)
        text = starter.frappe_config(site, bench_path)
    elif preset == "host":
        text = starter.host_config()
    else:
        fail(f"unknown preset '{preset}'; use host or frappe", 2)
    output.parent.mkdir(parents=True, exist_ok=True)
    # the file may hold database passwords: readable by its owner only
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(output, 0o600)
    typer.echo(f"wrote {output}; check it with `nachtwacht config validate -c {output}`")
    typer.echo(
        "nobody is paged until you fill in its `people:` and `notify:` sections "
        "(commented examples are in the file)"
    )


@config_app.command("validate")
def validate(config: ConfigOption = None) -> None:
    """Check a config file; print file:line: key: problem for each mistake (exit 2).

    Warnings (nobody can be paged, a role nobody holds) are printed too but do not fail it:
    a monitor without paging still monitors.
    """
    cfg = settings(config)
    warnings = config_warnings(cfg, config_path(config), checks=[reach_warnings])
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    noted = f"; {len(warnings)} warning{'s' * (len(warnings) != 1)}" if warnings else ""
    typer.echo(
        f"{config_path(config)}: ok ({len(cfg.probes)} probes, "
        f"{len(cfg.component_names())} components, store {cfg.store.url.split('://')[0]}"
        f"{noted})"
    )


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Listen address (default from config).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default from config).")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the web server and the engine in one process."""
    import uvicorn

    from nachtwacht.auth.users import ensure_admin
    from nachtwacht.clock import SystemClock
    from nachtwacht.store.db import Store, StoreError
    from nachtwacht.web.app import create_app

    cfg = settings(config)
    from nachtwacht.spool.log import in_use

    if in_use(cfg.spool_dir):
        # refused before the server starts: one line, not the lifespan's traceback
        fail(
            f"another nachtwacht serve is running with the spool {cfg.spool_dir} "
            "(same data dir and store); stop it first",
            1,
        )
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    store = Store(cfg.store.url)
    try:
        store.migrate()
        with store.begin() as conn:
            first_password = ensure_admin(conn, SystemClock().now())
    except StoreError as exc:
        fail(f"cannot open the store: {exc}", 2)
    if first_password:
        typer.echo(
            "first start: created user 'admin' with the one-time password\n"
            f"    {first_password}\n"
            "log in and change it (`nachtwacht user passwd admin`); it is not shown again"
        )
    listen_host = host or cfg.server.host
    listen_port = port or cfg.server.port
    typer.echo(
        f"nachtwacht {__version__}: {len(cfg.probes)} probes, store {store.describe()}, "
        f"http://{listen_host}:{listen_port}/"
    )
    uvicorn.run(
        create_app(cfg, store),
        host=listen_host,
        port=listen_port,
        log_level=log_level,
        loop="uvloop" if _has_uvloop() else "asyncio",
        access_log=False,
        http=_guarded_http(cfg),
        # uvicorn's signature says int; it is handed to call_later, so 0.5s works too
        timeout_keep_alive=cfg.server.keep_alive_timeout,  # type: ignore[arg-type]
    )


def _guarded_http(cfg: Settings) -> type:
    """uvicorn's protocol with read deadlines and a connection bound (decision 17)."""
    from nachtwacht.web.connections import ConnectionLimits, connection_budget, guarded_protocol

    server = cfg.server
    bound, descriptors = connection_budget(server.max_connections, len(cfg.probes))
    logging.getLogger(__name__).info(
        "at most %d connections (descriptor limit %s); a request gets %gs for its headers, "
        "its body %gs a pause and %d bytes/s",
        bound,
        descriptors if descriptors is not None else "none",
        server.header_timeout,
        server.body_timeout,
        server.body_min_rate,
    )
    return guarded_protocol(
        ConnectionLimits(
            header_timeout=server.header_timeout,
            body_timeout=server.body_timeout,
            body_min_rate=float(server.body_min_rate),
            max_connections=bound,
        )
    )


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    """Run the CLI; a usage error is one line (`error: ...`) and exit 2, not a framed box.

    A stdout whose reader went away (`nachtwacht incident ack 2 | head -3`) ends in exit 141,
    as a shell reports any writer killed by SIGPIPE, with no traceback. Commands commit
    before they print, so the work is done by then: 141 only says the output was cut short.
    """
    stdout = sys.stdout
    closed = False
    code: int | str | None
    try:
        code = _invoke()
    except BrokenPipeError:
        closed, code = True, None
    except SystemExit as exc:
        code = exc.code
    if not closed:
        try:
            # print_json leaves output in the buffer: a closed pipe must show here, where it
            # is handled, not in the interpreter's last flush (a warning and exit 120)
            sys.stdout.flush()
        except BrokenPipeError:
            closed = True
    # typer handles EPIPE itself: it swaps in a stdout that ignores it, then exits 1
    if closed or state.stdout_closed or sys.stdout is not stdout:
        drop_stdout()
        code = STDOUT_CLOSED_EXIT
    raise SystemExit(code)


def _invoke() -> int:
    # typer vendors click; its UsageError is BadParameter's base class
    # __mro__ is typed as a tuple of plain `type`; this entry is click's UsageError
    usage_error = cast(type[Exception], typer.BadParameter.__mro__[1])
    try:
        code = app(standalone_mode=False)
    except usage_error as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            # a group without its command (`nachtwacht probes`): its help, and exit 2 as for
            # any incomplete command line. Rich has printed the help while making the message;
            # without rich the message is the help.
            text = exc.format_message()  # type: ignore[attr-defined]
            if text.strip():
                typer.echo(text)
            return 2
        ctx = getattr(exc, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else ""
        typer.echo(f"error: {where}{exc.format_message()}", err=True)  # type: ignore[attr-defined]
        return 2
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    return code if isinstance(code, int) else 0
