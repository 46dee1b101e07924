"""What every command shares: `--config`, loading it, one-line errors, and a closed stdout."""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from nachtwacht.config.schema import Settings
    from nachtwacht.store.db import Store

# The config's schema (pydantic) and the store (SQLAlchemy) load inside the functions that use
# them: `nachtwacht --help` and a command's --help need neither (docs/performance.md).

ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file (default: $NACHTWACHT_CONFIG or ./nachtwacht.yaml).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
T = TypeVar("T")

# 128 + SIGPIPE: what a shell reports for a writer whose reader went away (`yes | head -1`)
STDOUT_CLOSED_EXIT = 141


class CliState:
    config: str | None = None
    stdout_closed: bool = False


state = CliState()


def config_path(option: str | None) -> str:
    from nachtwacht.config.loader import resolve_config_path

    return str(resolve_config_path(option or state.config))


def settings(option: str | None) -> Settings:
    """Load the config or exit 2 with `file:line: key: message` lines, touching nothing."""
    from nachtwacht.config.loader import ConfigError, load_config

    try:
        return load_config(option or state.config)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2) from None


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def drop_stdout() -> None:
    """Send the rest of the output to /dev/null: its reader went away (`... | head -3`).

    Later writes, and the interpreter's last flush, then succeed instead of raising again;
    `main` exits STDOUT_CLOSED_EXIT. Restoring SIGPIPE's default instead would kill the
    process wherever it is writing, a transaction included.
    """
    state.stdout_closed = True
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a test runner's buffer): nothing to redirect
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def keep_going(show: Callable[[T], None]) -> Callable[[T], None]:
    """`show` for progress printed while work goes on: a closed stdout ends the output only."""

    def shown(item: T) -> None:
        if state.stdout_closed:
            return
        try:
            show(item)
        except BrokenPipeError:
            drop_stdout()

    return shown


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def cli_actor(value: str | None) -> str:
    """Who acts from the command line: `--actor`, else the login name."""
    if value:
        return value
    try:
        return os.environ.get("USER") or getpass.getuser()
    except OSError:
        return "cli"


@contextmanager
def open_store(cfg: Settings) -> Iterator[Store]:
    """The configured store, migrated; a store error is one line and exit 2."""
    from nachtwacht.store.db import Store, StoreError

    store = Store(cfg.store.url)
    try:
        store.migrate()
        yield store
    except StoreError as exc:
        fail(f"cannot use the store: {exc}", 2)
    finally:
        store.dispose()
