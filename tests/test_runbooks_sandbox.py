"""Every built-in runbook, in both variants, as a dry run and for real against a sandbox.

The sandbox: a directory of stand-in scripts named like the tools the runbooks call
(systemctl, sudo, bench, curl, mysqladmin, mysqlcheck, mysql, mysqldump, iptables, nachtwacht,
iostat, supervisorctl, pg_isready, journalctl). `runbooks.path` puts it in front of PATH, so a
runbook's `systemctl restart nginx` runs the stand-in, which appends its arguments to
calls.log, prints a line, and exits 0, or 1 when its arguments contain the text in
fail/<tool> (that is how a test makes restarts fail). `sudo -n X` runs X, so
`sudo -n systemctl ...` reaches the systemctl stand-in. Everything else (df, free, ps, top,
tail, who) is the real, read-only tool. The probes the runbooks wait for are real TCP probes
against a listening socket.

The helpers here are imported by the other runbook tests.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from nachtwacht.alerts.maintenance import alert_muted_by
from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import parse_config
from nachtwacht.config.schema import Settings
from nachtwacht.incidents import escalation
from nachtwacht.incidents import service as incidents
from nachtwacht.runbooks import service
from nachtwacht.runbooks.runner import Policy, Runner, Who
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store

TOOLS = (
    "systemctl",
    "sudo",
    "bench",
    "curl",
    "mysqladmin",
    "mysqlcheck",
    "mysql",
    "mysqldump",
    "iptables",
    "nachtwacht",
    "iostat",
    "supervisorctl",
    "pg_isready",
    "journalctl",
)
DB_PASSWORD = "Db-Pa55w0rd-7731"
API_SECRET = "api-secret-9d2e4f"
BUILTINS = (
    "immediate-response",
    "monitoring-failure",
    "analytics-failure",
    "performance-failure",
    "security-incident",
    "database-emergency",
)
STUB = """#!/bin/sh
printf '%s\\n' "{name} $*" >> "{log}"
echo "stub {name}: $*"
if [ -f "{fail}" ]; then
  pattern=$(cat "{fail}")
  case "$*" in *"$pattern"*) echo "{name}: failed (sandbox)" >&2; exit 1;; esac
fi
if [ "{name}" = sudo ]; then
  [ "$1" = -n ] && shift
  exec "$@"
fi
exit 0
"""


@dataclass
class Sandbox:
    root: Path
    port: int
    listener: socket.socket
    bin: Path = field(init=False)

    def __post_init__(self) -> None:
        self.bin = self.root / "bin"
        self.bin.mkdir(parents=True)
        (self.root / "fail").mkdir()
        self.bench_path.mkdir()
        for tool in TOOLS:
            path = self.bin / tool
            path.write_text(
                STUB.format(name=tool, log=self.log, fail=self.root / "fail" / tool),
                encoding="utf-8",
            )
            path.chmod(0o755)
        self.log.touch()

    @property
    def bench_path(self) -> Path:
        return self.root / "frappe-bench"

    @property
    def log(self) -> Path:
        return self.root / "calls.log"

    def calls(self) -> list[str]:
        return self.log.read_text(encoding="utf-8").splitlines()

    def fail(self, tool: str, when_args_contain: str) -> None:
        (self.root / "fail" / tool).write_text(when_args_contain, encoding="utf-8")

    def config(
        self,
        store_url: str,
        variant: str = "systemd",
        extra: str = "",
        runbooks: Path | None = None,
    ) -> str:
        folder = f'  dir: "{runbooks}"\n' if runbooks is not None else ""
        # the stand-in on runbooks.path, not the real CLI beside this Python
        frappe = (
            f'  vars: {{bench_path: "{self.bench_path}", frappe_site: erp.example.org, '
            "nachtwacht: nachtwacht}\n"
            if variant == "frappe"
            else "  vars: {nachtwacht: nachtwacht}\n"
        )
        return f"""
store:
  url: {store_url}
site: sandbox
runbooks:
  variant: {variant}
  path: ["{self.bin}"]
  secret_vars: {{api_secret: "{API_SECRET}"}}
{frappe}{folder}evidence:
  dir: "{self.root / "evidence"}"
probes:
  - {{name: db, kind: tcp, host: 127.0.0.1, port: {self.port}, component: database,
      severity: 1}}
  - {{name: web, kind: tcp, host: 127.0.0.1, port: {self.port}, component: web}}
  - {{name: orders, kind: sql, enabled: false, component: database, query: SELECT 1,
      url: "mysql+pymysql://shop:{DB_PASSWORD}@127.0.0.1:{self.port}/shop"}}
{extra}"""

    def settings(
        self, store: Store, variant: str = "systemd", extra: str = "", runbooks: Path | None = None
    ) -> Settings:
        return parse_config(self.config(store.url, variant, extra, runbooks), "sandbox.yaml")


@pytest.fixture(name="sandbox")
def sandbox_fixture(tmp_path: Path) -> Iterator[Sandbox]:
    """Import `sandbox_fixture` to use the `sandbox` fixture in another module."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield Sandbox(tmp_path / "sandbox", listener.getsockname()[1], listener)
    finally:
        listener.close()


def declare(store: Store, settings: Settings, clock: FakeClock, severity: int = 1) -> int:
    with store.begin() as conn:
        incident_id = incidents.open_incident(
            conn, settings, title="Site down", severity=severity, now=clock.now(), origin="declared"
        )
        escalation.advance(conn, settings, incident_id, clock.now(), alert_muted_by)
    return incident_id


def run(
    store: Store,
    settings: Settings,
    clock: FakeClock,
    name: str,
    *,
    incident_id: int | None = None,
    policy: Policy | None = None,
    who: Who | None = None,
    dry_run: bool = False,
    inputs: dict[str, str] | None = None,
) -> dict[str, Any]:
    runner = Runner(store, settings, clock)
    run_id = asyncio.run(
        runner.start(
            name,
            who=who or Who("rita", "responder"),
            incident_id=incident_id,
            dry_run=dry_run,
            inputs=inputs,
            policy=policy or Policy(destructive="yes", manual="yes"),
        )
    )
    with store.connect() as conn:
        return service.run_view(conn, run_id)


def timeline(store: Store, incident_id: int) -> list[dict[str, Any]]:
    with store.connect() as conn:
        return incidents.timeline(conn, incident_id)


def all_outputs(store: Store) -> str:
    with store.connect() as conn:
        rows = conn.execute(select(t.runbook_steps.c.output)).scalars().all()
        events = conn.execute(select(t.incident_events.c.message)).scalars().all()
    return "\n".join([*(r or "" for r in rows), *events])


# -- what each built-in must run in each variant (the stand-ins' log) ---------------------------

EXPECTED: dict[tuple[str, str], list[str]] = {
    ("immediate-response", "systemd"): ["curl -fsSI", "systemctl status nginx mariadb"],
    ("immediate-response", "frappe"): [
        "bench doctor",
        "bench restart",
        "bench --site erp.example.org clear-cache",
    ],
    ("monitoring-failure", "systemd"): [
        "systemctl restart nginx",
        "systemctl restart mariadb",
        "mysqlcheck --host=127.0.0.1",
    ],
    ("monitoring-failure", "frappe"): [
        "systemctl restart nginx",
        "bench restart",
        "bench --site erp.example.org execute frappe.ping",
    ],
    ("analytics-failure", "systemd"): ["curl -fsS --max-time 10 http://127.0.0.1:8080/healthz"],
    ("analytics-failure", "frappe"): [
        "bench version",
        "bench --site erp.example.org set-config -p disable_advanced_analytics 1",
    ],
    ("performance-failure", "systemd"): ["iostat -x 1 3", "curl -fsS -o /dev/null"],
    ("performance-failure", "frappe"): [
        "bench --site erp.example.org set-config -p enable_performance_optimization 0",
        "bench restart",
    ],
    ("security-incident", "systemd"): [
        "nachtwacht security block 203.0.113.9 --incident 1 --reason security incident runbook",
        "nachtwacht security lockdown --port 80 --incident 1 --reason security incident runbook",
    ],
    ("security-incident", "frappe"): [
        "bench --site erp.example.org set-config -p enable_security_logging 1",
        "nachtwacht security sessions --site erp.example.org --limit 50",
    ],
    ("database-emergency", "systemd"): [
        "mysqladmin --host=127.0.0.1",
        "systemctl restart mariadb",
        "mysqlcheck --host=127.0.0.1",
    ],
    ("database-emergency", "frappe"): ["systemctl restart mariadb", "mysqlcheck"],
}
# stand-in calls that must not happen (a restore without a failed repair, ...)
NEVER: dict[str, list[str]] = {
    "database-emergency": ["--auto-repair", "supervisorctl stop", "mysql --host"],
    "monitoring-failure": ["bench restart"],
}


@pytest.mark.parametrize("variant", ["systemd", "frappe"])
@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_dry_run_shows_commands_with_secrets_masked(
    sqlite_store: Store, clock: FakeClock, sandbox: Sandbox, name: str, variant: str
) -> None:
    settings = sandbox.settings(sqlite_store, variant)
    incident_id = declare(sqlite_store, settings, clock)
    view = run(sqlite_store, settings, clock, name, incident_id=incident_id, dry_run=True)
    assert view["status"] == "planned" and view["dry_run"] is True
    assert all(s["status"] == "planned" for s in view["steps"])
    assert sandbox.calls() == []  # nothing ran
    text = "\n".join(s["output"] for s in view["steps"])
    assert DB_PASSWORD not in text and API_SECRET not in text
    assert "{{" not in text  # every variable was filled in
    if variant == "frappe":
        assert str(sandbox.bench_path) in text or "supervisorctl" in text
    else:
        assert "bench" not in text.replace("benchmark", "")
    if "MYSQL_PWD" in text:
        assert "MYSQL_PWD=••••••" in text
    kinds = [e["kind"] for e in timeline(sqlite_store, incident_id)]
    assert kinds.count("runbook") == 1 and "runbook_step" not in kinds


@pytest.mark.parametrize("variant", ["systemd", "frappe"])
@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_runs_for_real_against_the_sandbox(
    sqlite_store: Store, clock: FakeClock, sandbox: Sandbox, name: str, variant: str
) -> None:
    settings = sandbox.settings(sqlite_store, variant)
    incident_id = declare(sqlite_store, settings, clock)
    inputs = {"suspicious_ip": "203.0.113.9"} if name == "security-incident" else None
    view = run(sqlite_store, settings, clock, name, incident_id=incident_id, inputs=inputs)
    steps = view["steps"]
    detail = service.detail(settings, name)
    assert [s["id"] for s in steps] == [s["id"] for s in detail["steps"]]
    failed = [s for s in steps if s["status"] not in ("ok", "skipped")]
    # a run whose steps failed says so, even when they were allowed to
    if failed:
        assert view["status"] == "partly_failed", view["summary"]
        assert view["summary"] == f"completed, {len(failed)} of {len(steps)} steps failed"
    else:
        assert (view["status"], view["summary"]) == ("succeeded", "completed")
    # only read-only checks that depend on this machine may fail (they continue)
    for s in failed:
        assert s["status"] == "failed"
        assert next(d for d in detail["steps"] if d["id"] == s["id"])["on_failure"] == "continue"
    calls = "\n".join(sandbox.calls())
    for expected in EXPECTED[(name, variant)]:
        assert expected in calls, f"{expected!r} not run; calls:\n{calls}"
    for never in NEVER.get(name, []) if variant == "systemd" else []:
        assert never not in calls
    for s in steps:
        assert s["started_at"] is not None and s["finished_at"] is not None
        if s["kind"] == "manual" or (s["status"] == "ok" and "restart" in s["id"]):
            assert s["confirmed_by"] == "rita"
    events = [e for e in timeline(sqlite_store, incident_id) if e["kind"] == "runbook_step"]
    assert len(events) == len(steps)
    assert [e["data"]["name"] for e in events] == [s["id"] for s in steps]
    outputs = all_outputs(sqlite_store)
    assert DB_PASSWORD not in outputs and API_SECRET not in outputs


def test_the_sandbox_stand_in_fails_on_request(tmp_path: Path, sandbox: Sandbox) -> None:
    import subprocess

    sandbox.fail("systemctl", "restart")
    env = {**os.environ, "PATH": f"{sandbox.bin}:{os.environ['PATH']}"}
    ok = subprocess.run(["sudo", "-n", "systemctl", "status", "x"], env=env, check=False)
    bad = subprocess.run(["systemctl", "restart", "x"], env=env, check=False)
    assert (ok.returncode, bad.returncode) == (0, 1)
    assert sandbox.calls() == [
        "sudo -n systemctl status x",
        "systemctl status x",
        "systemctl restart x",
    ]
