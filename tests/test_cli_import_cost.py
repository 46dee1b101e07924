"""What the command line imports: `nachtwacht --help` loads no command's module (no store, no
schema), `status` loads no web stack, no Alembic and no database driver it does not use, and
no command that does not serve HTTP loads FastAPI, Starlette, uvicorn or OpenTelemetry.

The checks are on which modules load, not on how long they take: times on a shared 2-core
machine vary threefold. bench/cli_import.py measures; docs/performance.md has the numbers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
WEB_STACK = ("fastapi", "starlette", "uvicorn", "opentelemetry")
# what `nachtwacht --help` must not load: each belongs to a command, not to the listing
NOT_FOR_HELP = ("sqlalchemy", "pydantic", "yaml", "alembic", "jinja2", "aiohttp", "psutil")
# what `nachtwacht status` must not load: it reads the store at its current revision with
# SQLite here, so neither Alembic nor the PostgreSQL and MySQL drivers (nor an HTTP client)
NOT_FOR_STATUS = (*WEB_STACK, "alembic", "psycopg", "pymysql", "aiohttp", "httpx", "jinja2")
# generous: the import measured 0.08-0.45 s on a loaded 2-core machine; 2.0 s before it went
# lazy (docs/performance.md). A bound only against a command module loading eagerly again.
BOUND_US = 1_000_000


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return env


def _importtime(code: str) -> dict[str, int]:
    """Module name -> cumulative import time in microseconds, per `python -X importtime`."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        env=_env(),
        check=True,
        timeout=120,
    )
    times: dict[str, int] = {}
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|", 2)
        if cumulative.strip().isdigit():
            times[name.strip()] = int(cumulative)
    return times


def test_importing_the_cli_loads_no_command_module() -> None:
    times = _importtime("import nachtwacht.cli.main")
    heavy = sorted(name for name in times if name.split(".")[0] in (*WEB_STACK, *NOT_FOR_HELP))
    assert not heavy, f"the CLI imports {heavy[:10]}"
    commands = sorted(name for name in times if name.endswith(".cli") and "nachtwacht" in name)
    assert commands == ["nachtwacht.cli"], commands
    assert times["nachtwacht.cli.main"] < BOUND_US, times["nachtwacht.cli.main"]


def _loaded_by(args: list[str], tmp_path: Path) -> list[str]:
    """The top-level packages loaded by running `nachtwacht ARGS` (after `init` wrote a config
    to tmp_path, in a process of its own, which `init` itself does not share)."""
    config = str(tmp_path / "nachtwacht.yaml")
    subprocess.run(
        [sys.executable, "-m", "nachtwacht", "init", "--force", "--output", config],
        capture_output=True,
        env=_env(),
        check=True,
        timeout=120,
    )
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from nachtwacht.cli.main import app\n"
        f"result = CliRunner().invoke(app, {[*args, '--config', config]!r})\n"
        "assert result.exit_code in (0, 1, 2), result.output\n"
        "assert 'error:' not in result.output, result.output\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_env(),
        check=True,
        timeout=120,
    )
    return result.stdout.split()


def test_help_loads_no_store_and_no_schema(tmp_path: Path) -> None:
    loaded = _loaded_by(["--help"], tmp_path)
    assert not set(loaded) & set(NOT_FOR_HELP), sorted(set(loaded) & set(NOT_FOR_HELP))


def test_status_loads_no_migrations_and_no_unused_driver(tmp_path: Path) -> None:
    """The starter config may hold sql probes for PostgreSQL or MariaDB found on this host:
    reading it checks that their drivers are installed without importing them. The first
    command on a new store creates its tables (Alembic); the one measured is the next."""
    _loaded_by(["status"], tmp_path)
    loaded = _loaded_by(["status"], tmp_path)
    assert "sqlalchemy" in loaded  # it did read the store
    assert not set(loaded) & set(NOT_FOR_STATUS), sorted(set(loaded) & set(NOT_FOR_STATUS))


def test_the_head_revision_read_without_alembic_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    from nachtwacht.store.db import head_revisions
    from nachtwacht.store.migrate import alembic_config

    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert head_revisions() == frozenset(heads)


def test_help_and_status_import_no_web_stack(tmp_path: Path) -> None:
    """With a real config: reading it imports every probe kind (the config's schema is the
    union of their configs), and a kind's client library (redis-py brings OpenTelemetry)
    must wait until a check runs."""
    config = str(tmp_path / "nachtwacht.yaml")
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from nachtwacht.cli.main import app\n"
        "runner = CliRunner()\n"
        "assert runner.invoke(app, ['--help']).exit_code == 0\n"
        f"assert runner.invoke(app, ['init', '--output', {config!r}]).exit_code == 0\n"
        f"result = runner.invoke(app, ['status', '--config', {config!r}])\n"
        "assert result.exit_code in (0, 1, 2), result.output\n"
        "assert 'error:' not in result.output, result.output\n"
        f"web = sorted(m for m in sys.modules if m.split('.')[0] in {WEB_STACK!r})\n"
        "print(web)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_env(),
        check=True,
        timeout=120,
    )
    assert result.stdout.strip() == "[]", result.stdout[:500]


def test_serve_help_still_works() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nachtwacht", "serve", "--help"],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--port" in result.stdout


def test_the_lazy_commands_list_their_own_help_line_in_order() -> None:
    """A LAZY line is what the loaded command shows in the listing: edit a command's first
    help paragraph and this says to copy it into cli/main.py."""
    import typer

    from nachtwacht.cli.lazy import LAZY, ORDER
    from nachtwacht.cli.main import app

    root = typer.main.get_command(app)
    listed = list(root.commands)  # type: ignore[attr-defined]
    assert listed == ORDER, "a command is missing from ORDER or ORDER names one that is not"
    for name, (_, _, line) in LAZY.items():
        command = root.load(name)  # type: ignore[attr-defined]
        first = (command.help or "").split("\f")[0].split("\n\n")[0].strip()
        assert line == first, f"{name}: LAZY says {line!r}, the command {first!r}"


def test_the_agent_imports_no_web_stack() -> None:
    """`nachtwacht agent` runs at other sites: the probes and their client, not the server."""
    times = _importtime(
        "import nachtwacht.agents.runner, nachtwacht.agents.cli\n"
        "from nachtwacht.probes import registry\n"
        "registry.kinds()\n"
    )
    web = sorted(name for name in times if name.split(".")[0] in WEB_STACK)
    assert not web, f"the agent imports the web stack: {web[:10]}"
