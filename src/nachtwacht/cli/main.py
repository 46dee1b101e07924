"""The `nachtwacht` command."""

from __future__ import annotations

import inspect
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from typer.core import TyperGroup

from nachtwacht import __version__
from nachtwacht.cli.common import (
    STDOUT_CLOSED_EXIT,
    ConfigOption,
    config_path,
    drop_stdout,
    fail,
    settings,
    state,
)
from nachtwacht.cli.lazy import LAZY, ORDER, Stub, load
from nachtwacht.problems import Problem

if TYPE_CHECKING:
    from nachtwacht.config.schema import Settings


class _Nachtwacht(TyperGroup):
    """The root command: a domain's refusal (`Problem`) becomes one `error:` line and its exit
    code here, the one place for every command, however it is invoked (`main()`, a test's
    CliRunner); a command lets a `Problem` propagate instead of translating it itself.

    The commands of LAZY stand here as stubs holding their help line until one is asked for
    (`get_command` outside a help listing): then its module loads and the real command
    takes the stub's place."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        eager: dict[str, Any] = dict(self.commands)
        stubs = {name: Stub(name=name, help=LAZY[name][2]) for name in LAZY}
        self.commands = {n: eager.pop(n, None) or stubs[n] for n in ORDER} | eager
        self._listing = False
        _reflow_help(self)

    def load(self, name: str) -> Any:
        """The command `name`, its module loaded if it was a stub; None if there is none."""
        command = self.commands.get(name)
        if isinstance(command, Stub):
            command = load(name)
            _reflow_help(command)
            self.commands[name] = command
        return command

    def load_all(self) -> None:
        for name in list(self.commands):
            self.load(name)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if self._listing:
            return self.commands.get(cmd_name)
        return self.load(cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        # listing the commands needs their help lines only: the stubs have them
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

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
        if isinstance(command, _Nachtwacht):
            sub = command.load(word)
        else:
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
    from nachtwacht.config import starter

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
    from nachtwacht.config.loader import config_warnings
    from nachtwacht.notify.reach import config_warnings as reach_warnings

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
    role: Annotated[
        str,
        typer.Option(
            help="all (web and engine), web (dashboard, API and ingest only) or worker "
            "(probes, alerts and pages; HTTP answers only /healthz and /metrics). Several "
            "processes need PostgreSQL or MariaDB (docs/operations.md)."
        ),
    ] = "all",
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
    from nachtwacht.engine.members import ROLES, local_id, refuse_second
    from nachtwacht.problems import Problem

    if role not in ROLES:
        fail(f"--role must be one of {', '.join(ROLES)}, not '{role}'", 2)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    store = Store(cfg.store.url)
    try:
        store.migrate()
        # a second process on SQLite: one clear line, not the lifespan's traceback
        refuse_second(store, local_id(), SystemClock().now())
        with store.begin() as conn:
            first_password = ensure_admin(conn, SystemClock().now())
    except StoreError as exc:
        fail(f"cannot open the store: {exc}", 2)
    except Problem as exc:
        fail(exc.message, 1)
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
        f"role {role}, http://{listen_host}:{listen_port}/"
    )
    uvicorn.run(
        create_app(cfg, store, role=role),
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
    was_devnull = _is_devnull(1)
    closed = False
    code: int | str | None
    try:
        code = _invoke()
    except BrokenPipeError:
        closed, code = True, None
    except SystemExit as exc:
        code = exc.code
        # rich (typer's help) meets a closed pipe by pointing fd 1 at /dev/null and exiting 1
        closed = code == 1 and not was_devnull and _is_devnull(1)
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


def _is_devnull(fd: int) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(os.devnull))
    except OSError:
        return False


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
