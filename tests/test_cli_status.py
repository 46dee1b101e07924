"""`nachtwacht status` reads the store directly and its exit code tells the verdict."""

from __future__ import annotations

import json
import socket
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from nachtwacht.cli.main import app
from nachtwacht.clock import FakeClock, SystemClock
from nachtwacht.config.loader import load_config
from nachtwacht.engine.runtime import Runtime
from nachtwacht.probes import cli as probes_cli
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.conftest import closed_port

runner = CliRunner()


def _write(tmp_path: Path, probes: str, extra: str = "") -> Path:
    path = tmp_path / "nachtwacht.yaml"
    path.write_text(f"site: cli-site\n{extra}probes:\n{probes}", encoding="utf-8")
    return path


# all is well only when an outage would page someone
PAGED = """people:
  contacts: [{id: olga, name: Olga, roles: [oncall_engineer], email: olga@example.org}]
notify:
  channels: {mail: {kind: email}}
"""


def _tcp(name: str, port: int, component: str, retries: int = 0) -> str:
    return (
        f"  - name: {name}\n    kind: tcp\n    host: 127.0.0.1\n    port: {port}\n"
        f"    component: {component}\n    retries: {retries}\n"
    )


async def _run_all(config: Path) -> None:
    settings = load_config(config)
    rt = Runtime.build(settings, clock=FakeClock(SystemClock().now()))
    await rt.scheduler.run_now()
    await rt.engine.tick_once("health")  # as a running `serve` does every 15 s
    await rt.stop()
    rt.store.dispose()


async def test_status_exits_0_when_all_is_well(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        cfg = _write(tmp_path, _tcp("web", sock.getsockname()[1], "web"), PAGED)
        await _run_all(cfg)
    result = runner.invoke(app, ["status", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "cli-site: OK" in result.output
    assert "web" in result.output


async def test_status_exits_1_when_degraded_and_2_when_critical(tmp_path: Path) -> None:
    cfg = _write(tmp_path, _tcp("db", closed_port(), "database", retries=3))
    await _run_all(cfg)
    result = runner.invoke(app, ["status", "--config", str(cfg)])
    assert result.exit_code == 1, result.output  # pending is degraded, not yet critical
    assert "PEND" in result.output

    cfg = _write(tmp_path, _tcp("db", closed_port(), "database", retries=0))
    await _run_all(cfg)
    result = runner.invoke(app, ["status", "--json", "--config", str(cfg)])
    assert result.exit_code == 2
    data = json.loads(result.output)
    assert data["overall"] == "critical"
    probe = data["components"][0]["probes"][0]
    assert probe["state"] == "critical" and "Connection refused" in probe["message"]


def test_status_exits_2_with_one_line_when_the_store_is_unreachable(tmp_path: Path) -> None:
    cfg = tmp_path / "nachtwacht.yaml"
    cfg.write_text(
        f"store:\n  url: postgresql+psycopg://nobody@127.0.0.1:{closed_port()}/x\nprobes: []\n",
        encoding="utf-8",
    )
    result = runner.invoke(app, ["status", "--config", str(cfg)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot read the store")
    assert "Traceback" not in result.output


def test_check_runs_named_probes_without_a_server(tmp_path: Path) -> None:
    cfg = _write(tmp_path, _tcp("db", closed_port(), "database"))
    result = runner.invoke(app, ["check", "db", "--json", "--config", str(cfg)])
    assert result.exit_code == 2
    rows = json.loads(result.output)
    assert rows[0]["name"] == "db" and rows[0]["status"] == "critical"
    result = runner.invoke(app, ["check", "nope", "--config", str(cfg)])
    assert result.exit_code == 2 and "no probe named nope" in result.output


def test_probes_list(tmp_path: Path) -> None:
    cfg = _write(tmp_path, _tcp("db", 5432, "database"))
    result = runner.invoke(app, ["--config", str(cfg), "probes", "list", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output)[0]["component"] == "database"


def test_status_lists_open_incidents(tmp_path: Path) -> None:
    cfg = _write(tmp_path, _tcp("db", closed_port(), "database"))
    result = runner.invoke(
        app,
        ["incident", "declare", "--severity", "1", "--title", "Database corrupt", "-c", str(cfg)],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["status", "--config", str(cfg)])
    assert "open incidents" in result.output and "S1" in result.output
    assert "Database corrupt" in result.output
    data = json.loads(runner.invoke(app, ["status", "--json", "-c", str(cfg)]).output)
    assert data["incidents"][0]["title"] == "Database corrupt"
    assert data["incidents"][0]["acknowledged"] is False
    assert data["incidents"][0]["response_overdue"] is False


def test_status_says_when_nobody_acknowledged_in_time(tmp_path: Path) -> None:
    cfg = _write(tmp_path, _tcp("db", closed_port(), "database"))
    args = ["incident", "declare", "--severity", "1", "--title", "Database corrupt"]
    assert runner.invoke(app, [*args, "-c", str(cfg)]).exit_code == 0
    store = Store(load_config(cfg).store.url)
    with store.begin() as conn:  # as if its 15 minutes had passed
        conn.execute(update(t.incidents).values(response_due_at=t.incidents.c.detected_at - 1))
    store.dispose()
    result = runner.invoke(app, ["status", "--config", str(cfg)])
    assert "OVERDUE" in result.output and "(nobody acknowledged by" in result.output
    data = json.loads(runner.invoke(app, ["status", "--json", "-c", str(cfg)]).output)
    assert data["incidents"][0]["response_overdue"] is True


def test_incident_list_all_shows_a_resolved_unacknowledged_incident_as_history(
    tmp_path: Path,
) -> None:
    cfg = _write(tmp_path, _tcp("db", closed_port(), "database"))
    args = ["incident", "declare", "--severity", "1", "--title", "Database corrupt"]
    assert runner.invoke(app, [*args, "-c", str(cfg)]).exit_code == 0
    store = Store(load_config(cfg).store.url)
    with store.begin() as conn:  # nobody acknowledged it in time, then it resolved
        conn.execute(
            update(t.incidents).values(
                response_due_at=t.incidents.c.detected_at - 1,
                status="resolved",
                resolved_at=t.incidents.c.detected_at + 60,
            )
        )
    store.dispose()
    listed = runner.invoke(app, ["incident", "list", "--all", "-c", str(cfg)])
    assert listed.exit_code == 0, listed.output
    assert "not acked" in listed.output and "OVERDUE" not in listed.output, listed.output
    data = json.loads(
        runner.invoke(app, ["incident", "list", "--all", "--json", "-c", str(cfg)]).output
    )
    assert data[0]["response_overdue"] is False


async def test_status_says_the_monitor_is_not_running_when_its_engine_went_quiet(
    tmp_path: Path,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        cfg = _write(tmp_path, _tcp("web", sock.getsockname()[1], "web"))
        settings = load_config(cfg)
        clock = FakeClock(SystemClock().now() - 3600)  # all of this happened an hour ago
        rt = Runtime.build(settings, clock=clock)
        await rt.scheduler.run_now()
        await rt.engine.tick_once("health")
        await rt.stop()
        rt.store.dispose()
    result = runner.invoke(app, ["status", "--config", str(cfg)])
    # the last answers were ok, but nobody has checked for an hour: that is not a quiet night
    assert result.exit_code == 1, result.output
    assert "THE MONITOR IS NOT RUNNING" in result.output
    assert "STALE" in result.output
    data = json.loads(runner.invoke(app, ["status", "--config", str(cfg), "--json"]).output)
    assert data["engine_running"] is False
    assert data["components"][0]["probes"][0]["stale"] is True


LONG_MESSAGE = (
    "HTTP 503 from https://erp.example.org/api/method/frappe.auth.get_logged_user after 9.8 s: "
    "upstream connect error or disconnect/reset before headers"
)


async def test_status_fits_80_columns_in_the_sites_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long probe names, a long probe message, a long title of an S1 nobody acknowledged."""
    probes = "".join(
        _tcp(name, closed_port(), component)
        for name, component in (
            ("frappe-erp-production-scheduler-heartbeat", "erp-production-frappe-bench"),
            ("mariadb-primary-replication-lag-seconds", "database"),
            ("db", "database"),
        )
    )
    cfg = _write(tmp_path, probes, "timezone: Asia/Kathmandu\n")
    await _run_all(cfg)
    now = SystemClock().now() + 30
    monkeypatch.setattr(probes_cli, "CLOCK", FakeClock(now))
    title = "Database corrupt on the primary; replica lagging, ERP refuses logins for every shop"
    declare = ["incident", "declare", "-s", "1", "--title", title, "-c", str(cfg)]
    assert runner.invoke(app, declare).exit_code == 0
    store = Store(load_config(cfg).store.url)
    with store.begin() as conn:  # its 15 minutes passed ten minutes ago
        conn.execute(update(t.incidents).values(response_due_at=now - 600))
        conn.execute(update(t.probe_state).values(last_message=LONG_MESSAGE))
    store.dispose()

    result = runner.invoke(app, ["status", "-c", str(cfg)], env={"COLUMNS": "80"})

    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80, "\n" + result.output
    local = datetime.fromtimestamp(now, ZoneInfo("Asia/Kathmandu"))
    assert lines[0].endswith(f"({local:%Y-%m-%d %H:%M} +0545)"), lines[0]
    due = datetime.fromtimestamp(now - 600, ZoneInfo("Asia/Kathmandu"))
    flat = " ".join(result.output.split())
    shown = f"{due:%H:%M}" if due.date() == local.date() else f"{due:%Y-%m-%d %H:%M}"
    assert f"S1 investigating OVERDUE {title} (nobody acknowledged by {shown})" in flat
    assert "frappe-erp-production-scheduler-heartbeat" in flat  # names are not cut
    assert flat.count(" ".join(LONG_MESSAGE.split())) == 3  # nor what the probes said
