"""The `nachtwacht doctor` command."""

from __future__ import annotations

import typer

from nachtwacht.cli.common import ConfigOption, JsonOption, config_path, print_json, state
from nachtwacht.config import ConfigError, load_config
from nachtwacht.watchdog import doctor as checks


def doctor(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Check this installation: config, store, migrations, disk, spool, clock, channels.

    One line per check (ok, warn, fail, skip); exit 0 all ok, 1 a warning, 2 a failure.
    Nothing is written and no message is sent.
    """
    path = config_path(config)
    try:
        settings = load_config(config or state.config)
    except ConfigError as exc:
        problems = [str(p) for p in exc.problems]
        found = [checks.Check("config", "fail", f"{path}: {p}") for p in problems]
        _show(found, as_json)
        raise typer.Exit(2) from None
    note = f"{path}: {len(settings.probes)} probes, {len(settings.notify.channels)} channels"
    found = checks.run(settings, note)
    _show(found, as_json)
    raise typer.Exit(checks.exit_code(found))


def _show(found: list[checks.Check], as_json: bool) -> None:
    if as_json:
        print_json(checks.as_json(found))
        return
    for check in found:
        typer.echo(check.line())
