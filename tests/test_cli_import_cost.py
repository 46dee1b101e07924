"""The command line does not import the web stack: `nachtwacht --help`, `status` and every
command that does not serve HTTP stay off FastAPI, Starlette, uvicorn and OpenTelemetry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
WEB_STACK = ("fastapi", "starlette", "uvicorn", "opentelemetry")
# generous: the import measured 0.6-1.1 s on a loaded 2-core machine (sqlalchemy, pydantic)
BOUND_US = 2_000_000


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


def test_importing_the_cli_imports_no_web_stack() -> None:
    times = _importtime("import nachtwacht.cli.main")
    web = sorted(name for name in times if name.split(".")[0] in WEB_STACK)
    assert not web, f"the CLI imports the web stack: {web[:10]}"
    assert times["nachtwacht.cli.main"] < BOUND_US, times["nachtwacht.cli.main"]


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


def test_the_agent_imports_no_web_stack() -> None:
    """`nachtwacht agent` runs at other sites: the probes and their client, not the server."""
    times = _importtime(
        "import nachtwacht.agents.runner, nachtwacht.agents.cli\n"
        "from nachtwacht.probes import registry\n"
        "registry.kinds()\n"
    )
    web = sorted(name for name in times if name.split(".")[0] in WEB_STACK)
    assert not web, f"the agent imports the web stack: {web[:10]}"
