"""`nachtwacht runbook list|show|run|resume|runs|log` through typer's CliRunner, and one run
through the real `nachtwacht` executable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nachtwacht.cli.main import app as cli
from nachtwacht.incidents import service as incidents
from nachtwacht.store.db import Store
from tests.test_runbooks_sandbox import (
    API_SECRET,
    DB_PASSWORD,
    Sandbox,
    sandbox_fixture,  # noqa: F401 - the `sandbox` fixture
)

runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path, sandbox: Sandbox) -> Path:
    path = tmp_path / "nachtwacht.yaml"
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    (runbooks / "say-secret.yaml").write_text(
        "title: Echo a secret\nsteps:\n"
        '  - {id: say, kind: command, command: "echo key={{ api_secret }}"}\n'
    )
    (runbooks / "leaky.yaml").write_text(
        "title: One step fails\nsteps:\n"
        '  - {id: flaky, kind: check, command: "false", on_failure: continue}\n'
        '  - {id: verify, kind: check, command: "true"}\n'
    )
    (runbooks / "unrecovered.yaml").write_text(
        "title: Still down\nsteps:\n"
        '  - {id: verify, kind: check, command: "false", on_failure: continue}\n'
    )
    path.write_text(sandbox.config(f"sqlite:///{tmp_path / 'nw.db'}", runbooks=runbooks))
    return path


def invoke(config: Path, *args: str, code: int = 0) -> str:
    result = runner.invoke(cli, ["runbook", *args, "-c", str(config)])
    assert result.exit_code == code, result.output
    return result.output


def declare(config: Path) -> int:
    from nachtwacht.config.loader import load_config

    cfg = load_config(config)
    store = Store(cfg.store.url)
    store.migrate()
    try:
        with store.begin() as conn:
            return incidents.open_incident(
                conn, cfg, title="Database down", severity=1, now=1_800_000_000.0
            )
    finally:
        store.dispose()


def test_list_and_show(config: Path) -> None:
    out = invoke(config, "list")
    assert "database-emergency     14 steps (5 destructive)  Database emergency  [built-in]" in out
    assert "say-secret" in out
    shown = invoke(config, "show", "database-emergency")
    assert (
        "6. Restart the database  [command, DESTRUCTIVE, 3 attempts, on failure: escalate]" in shown
    )
    assert "MYSQL_PWD=••••••" in shown and DB_PASSWORD not in shown
    assert json.loads(invoke(config, "show", "security-incident", "--json"))["inputs"] == {
        "suspicious_ip": {
            "description": "an address to block (empty: none identified yet)",
            "default": "",
            "type": "network",
        }
    }
    assert "no runbook named 'nope'" in invoke(config, "show", "nope", code=2)


def test_dry_run_prints_what_would_run_with_secrets_masked(config: Path, sandbox: Sandbox) -> None:
    out = invoke(config, "run", "database-emergency", "--dry-run")
    assert "[plan]    6. restart-database (command)" in out
    assert "$ sudo -n systemctl restart mariadb" in out
    assert "(destructive: needs confirmation and the responder role)" in out
    assert "MYSQL_PWD=••••••" in out and DB_PASSWORD not in out
    assert "run #1 of database-emergency: planned" in out
    secret = invoke(config, "run", "say-secret", "--dry-run")
    assert "$ echo key=••••••" in secret and API_SECRET not in secret
    assert sandbox.calls() == []


def test_run_without_yes_refuses_destructive_steps_and_pauses_at_manual_ones(
    config: Path, sandbox: Sandbox
) -> None:
    incident_id = declare(config)
    out = invoke(config, "run", "monitoring-failure", "-i", str(incident_id), code=1)
    assert "[REFUSED] 7. restart-web (command)" in out
    assert "destructive step not confirmed" in out
    assert "refused" in out.splitlines()[-1]
    assert not [c for c in sandbox.calls() if "restart" in c]
    out = invoke(config, "run", "immediate-response", code=3)
    assert "waiting at step 4 document-assessment" in out
    assert "resume it with `nachtwacht runbook resume 2`" in out
    out = invoke(config, "resume", "2", "--yes")
    assert "[ok]      4. document-assessment (manual, confirmed by" in out
    assert "run #2 of immediate-response: succeeded" in out
    assert "is succeeded, not waiting" in invoke(config, "resume", "2", code=1)


def test_run_with_yes_runs_everything_and_log_shows_it(config: Path, sandbox: Sandbox) -> None:
    incident_id = declare(config)
    out = invoke(
        config,
        "run",
        "database-emergency",
        "--yes",
        "--incident",
        str(incident_id),
        "--actor",
        "olga",
    )
    assert "[ok]      6. restart-database (command, confirmed by olga)" in out
    assert "run #1 of database-emergency: succeeded" in out
    assert "systemctl restart mariadb" in sandbox.calls()
    runs = invoke(config, "runs", "--incident", str(incident_id))
    assert "database-emergency" in runs and "succeeded" in runs and "by olga" in runs
    log = json.loads(invoke(config, "log", "1", "--json"))
    assert [s["status"] for s in log["steps"]].count("ok") >= 6
    assert DB_PASSWORD not in json.dumps(log)
    echo = invoke(config, "run", "say-secret", "--yes")
    assert "key=••••••" in echo and API_SECRET not in echo


def test_bad_input_is_one_line_and_exit_2(config: Path) -> None:
    out = invoke(
        config, "run", "security-incident", "--var", "suspicious_ip=1.2.3.4;reboot", code=2
    )
    assert out.strip().splitlines()[-1].startswith("error: input 'suspicious_ip' may hold")
    assert "error: --var takes NAME=VALUE" in invoke(config, "run", "x", "--var", "oops", code=2)
    assert "error: no incident 99" in invoke(
        config, "run", "immediate-response", "-i", "99", code=2
    )


def test_the_real_executable_runs_a_runbook(config: Path, sandbox: Sandbox) -> None:
    exe = Path(sys.executable).parent / "nachtwacht"
    done = subprocess.run(
        [str(exe), "runbook", "run", "performance-failure", "--yes", "-c", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "USER": "ops"},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "iostat -x 1 3" in sandbox.calls()
    assert "run #1 of performance-failure: succeeded" in done.stdout


def test_a_run_with_failed_steps_says_so_and_exits_1(config: Path) -> None:
    out = invoke(config, "run", "leaky", code=1)
    assert "partly_failed — completed, 1 of 2 steps failed" in out
    assert "succeeded" not in out
    out = invoke(config, "run", "unrecovered", code=1)
    assert "failed — completed, 1 of 1 step failed, the final check 1 verify (verify) failed" in (
        out
    )
