"""`nachtwacht init` and `nachtwacht config validate`, and the starter configs behind `init`."""

from __future__ import annotations

import json
import re
import socket
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from sqlalchemy import create_engine, make_url, text
from typer.testing import CliRunner

from nachtwacht.cli.main import app
from nachtwacht.clock import FakeClock
from nachtwacht.config import detect, frappe_bench, starter
from nachtwacht.config.loader import parse_config
from nachtwacht.probes.context import ProbeContext
from nachtwacht.probes.kinds.logfile import count_matches
from nachtwacht.probes.registry import kinds
from nachtwacht.probes.results import Status
from tests.conftest import MARIADB_ADMIN, REDIS_URL, closed_port, need_service

runner = CliRunner()
TOKEN = "test-token_0123456789"
SITE = "erp.example.org"
GOOD = "site: shop\nprobes:\n  - name: web\n    kind: tcp\n    host: 127.0.0.1\n    port: 80\n"
# someone to page for every step of the protocol's matrix, and a channel that reaches her
PAGED = """
people:
  contacts:
    - {id: olga, name: Olga, email: olga@example.org,
       roles: [oncall_engineer, technical_lead, management, executives]}
notify:
  channels:
    mail: {kind: email}
incidents:
  public_url: https://nachtwacht.example.org
"""


def probes_by_name(text: str) -> dict[str, dict[str, Any]]:
    """The probe entries of a generated file as plain data (independent of the kind modules)."""
    return {p["name"]: p for p in yaml.safe_load(text)["probes"]}


def make_bench(
    root: Path,
    site_config: dict[str, Any] | None = None,
    common: dict[str, Any] | None = None,
) -> Path:
    bench = root / "frappe-bench"
    (bench / "sites" / SITE).mkdir(parents=True)
    (bench / "logs").mkdir()
    if site_config is not None:
        (bench / "sites" / SITE / "site_config.json").write_text(json.dumps(site_config))
    if common is not None:
        (bench / "sites" / "common_site_config.json").write_text(json.dumps(common))
    return bench


SITE_CONFIG = {"db_name": "_5e5c0a1b2c", "db_password": "s3cr@t/pw:1", "monitor": 1}
COMMON = {
    "redis_cache": "redis://127.0.0.1:13001",
    "redis_queue": "redis://127.0.0.1:11002",
    "redis_socketio": "redis://127.0.0.1:12000",
}


# --- config validate --------------------------------------------------------------------------


def test_validate_exits_2_with_one_line_per_problem_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "nachtwacht.yaml"
    path.write_text(
        "timezone: Mars/Olympus\nprobes:\n  - name: web\n    kind: tcp\n    host: x\n"
        "    port: 80\n    timeoutt: 5s\n  - name: db\n    kind: tcpp\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)

    result = runner.invoke(app, ["config", "validate", "--config", str(path)])

    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"error: {path}:1: timezone: unknown timezone 'Mars/Olympus'")
    assert lines[1].startswith(f"error: {path}:7: probes[0].timeoutt: unknown key;")
    assert lines[1].endswith("did you mean 'timeout'?")
    assert lines[2].startswith(f"error: {path}:9: probes[1].kind: unknown kind 'tcpp'")
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nachtwacht.yaml"]  # no data dir, no db


def test_validate_reports_invalid_yaml_as_one_line(tmp_path: Path) -> None:
    path = tmp_path / "nw.yaml"
    path.write_text("probes:\n  - name: a\n   kind: tcp\n", encoding="utf-8")
    result = runner.invoke(app, ["config", "validate", "-c", str(path)])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {path}:3: invalid YAML:")


def test_validate_exits_0_on_a_good_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "nachtwacht.yaml"
    path.write_text(GOOD + PAGED, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["config", "validate", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{path}: ok (1 probes, 1 components, store sqlite)\n"
    assert result.stderr == ""  # nothing to warn about
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nachtwacht.yaml"]


def test_validate_warns_when_ack_links_point_at_this_machine_only(tmp_path: Path) -> None:
    path = tmp_path / "nachtwacht.yaml"
    path.write_text(GOOD + PAGED.split("incidents:")[0] + "server: {port: 18431}\n", "utf-8")
    result = runner.invoke(app, ["config", "validate", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "1 warning" in result.stdout
    assert "acknowledge links in pages point at http://127.0.0.1:18431" in result.stderr


def test_validate_reads_nachtwacht_config_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "from-env.yaml"
    path.write_text(GOOD, encoding="utf-8")
    result = runner.invoke(app, ["config", "validate"], env={"NACHTWACHT_CONFIG": str(path)})
    assert result.exit_code == 0, result.output
    assert str(path) in result.stdout


def test_root_config_option_applies_to_validate(tmp_path: Path) -> None:
    path = tmp_path / "root-option.yaml"
    path.write_text(GOOD, encoding="utf-8")
    result = runner.invoke(app, ["--config", str(path), "config", "validate"])
    assert result.exit_code == 0, result.output
    assert str(path) in result.stdout


def test_validate_without_a_file_says_how_to_create_one(tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "validate", "-c", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {tmp_path / 'nope.yaml'}: no such file; create one with `nachtwacht init`\n"
    )


# --- init ---------------------------------------------------------------------------------------


def test_init_writes_a_host_config_that_validates(tmp_path: Path) -> None:
    out = tmp_path / "etc" / "nachtwacht.yaml"
    result = runner.invoke(app, ["init", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# ")
    assert "disk-root" in text

    check = runner.invoke(app, ["config", "validate", "-c", str(out)])
    assert check.exit_code == 0, check.output


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "nachtwacht.yaml"
    out.write_text("# mine\n", encoding="utf-8")

    result = runner.invoke(app, ["init", "-o", str(out)])
    assert result.exit_code == 1
    assert "exists; use --force" in result.stderr
    assert out.read_text(encoding="utf-8") == "# mine\n"

    result = runner.invoke(app, ["init", "-o", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert "kind: host" in out.read_text(encoding="utf-8")


def test_init_frappe_preset_writes_a_valid_config_with_the_sites_database(tmp_path: Path) -> None:
    bench = make_bench(tmp_path, SITE_CONFIG, COMMON)
    out = tmp_path / "nachtwacht.yaml"
    result = runner.invoke(
        app,
        ["init", "--preset", "frappe", "--site", SITE, "--bench-path", str(bench), "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert "_5e5c0a1b2c" in text
    assert "# EDIT:" not in text  # everything was found

    check = runner.invoke(app, ["config", "validate", "-c", str(out)])
    assert check.exit_code == 0, check.output


def test_init_frappe_preset_needs_a_site(tmp_path: Path) -> None:
    out = tmp_path / "nachtwacht.yaml"
    result = runner.invoke(
        app, ["init", "--preset", "frappe", "--bench-path", str(tmp_path), "-o", str(out)]
    )
    assert result.exit_code == 2
    assert "--site" in result.stderr
    assert not out.exists()


def test_init_refuses_an_unknown_preset(tmp_path: Path) -> None:
    out = tmp_path / "nachtwacht.yaml"
    result = runner.invoke(app, ["init", "--preset", "django", "-o", str(out)])
    assert result.exit_code == 2
    assert "unknown preset 'django'" in result.stderr
    assert not out.exists()


# --- the host starter -----------------------------------------------------------------------


def test_host_config_starts_with_comments_pointing_at_the_docs() -> None:
    text = starter.host_config(open_ports=[], mounts=["/"], token=TOKEN, hostname="web1")
    header = text.split("\n\n", 1)[0].splitlines()
    assert all(line.startswith("#") for line in header)
    assert "docs/configuration.md" in "\n".join(header)
    assert "nachtwacht config validate" in "\n".join(header)


def test_host_config_probes_only_the_services_that_answered() -> None:
    text = starter.host_config(
        open_ports={5432, 6379}, mounts=["/", "/srv/data"], token=TOKEN, hostname="web1"
    )
    probes = probes_by_name(text)
    assert list(probes) == [
        "disk-root",
        "disk-srv-data",
        "memory",
        "cpu",
        "load",
        "swap",
        "nightly-backup",
        "postgresql",
        "redis",
    ]
    assert probes["disk-srv-data"]["mount"] == "/srv/data"
    assert probes["postgresql"]["kind"] == "sql"
    assert probes["postgresql"]["url"] == "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    assert (probes["redis"]["kind"], probes["redis"]["url"]) == (
        "redis",
        "redis://127.0.0.1:6379/0",
    )
    data = yaml.safe_load(text)
    assert data["site"] == "web1"
    assert list(data["components"]) == ["host", "database", "cache"]
    assert {p["component"] for p in probes.values()} <= set(data["components"])
    parse_config(text, "host.yaml")


def test_host_config_with_every_service_found_is_valid() -> None:
    ports = [s.port for s in detect.LOCAL_SERVICES]
    text = starter.host_config(open_ports=ports, mounts=["/"], token=TOKEN, hostname="web1")
    probes = probes_by_name(text)
    assert probes["mariadb"]["url"] == "mysql+pymysql://root@127.0.0.1:3306/"
    assert "# EDIT: credentials" in text
    for name, port in (("nginx-http", 80), ("nginx-https", 443), ("rabbitmq", 5672)):
        assert (probes[name]["kind"], probes[name]["port"]) == ("tcp", port)
    assert list(yaml.safe_load(text)["components"]) == ["host", "database", "cache", "web", "queue"]
    cfg = parse_config(text, "host.yaml")
    assert len(cfg.probes) == len(probes)


def test_host_config_without_services_has_host_probes_and_the_heartbeat() -> None:
    text = starter.host_config(open_ports=[], mounts=["/"], token=TOKEN, hostname="web1")
    assert {p["kind"] for p in probes_by_name(text).values()} == {"host", "heartbeat"}
    assert "none were found" in text
    parse_config(text, "host.yaml")


def test_host_config_heartbeat_has_a_fresh_token_and_a_curl_line() -> None:
    first = probes_by_name(starter.host_config(open_ports=[], mounts=["/"]))["nightly-backup"]
    text = starter.host_config(open_ports=[], mounts=["/"])
    second = probes_by_name(text)["nightly-backup"]
    assert first["token"] != second["token"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{8,128}", second["token"])
    assert "curl -fsS" in text and f"http://127.0.0.1:8080/ping/{second['token']}" in text
    assert (second["period"], second["grace"]) == ("1d", "1h")


def test_host_config_self_probe_example_is_valid_when_uncommented() -> None:
    text = starter.host_config(open_ports=[], mounts=["/"], token=TOKEN, hostname="web1")
    block = text[text.index("  # - name: nachtwacht") :]
    uncommented = "\n".join(line.replace("  # ", "  ", 1) for line in block.splitlines())
    cfg = parse_config(text + uncommented + "\n", "host.yaml")
    assert str(cfg.probes[-1].url) == "http://127.0.0.1:8080/healthz"


def test_detect_open_ports_finds_a_listener_and_not_a_closed_port() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        open_port = listener.getsockname()[1]
        refused = closed_port()
        assert detect.detect_open_ports([open_port, refused]) == {open_port}


def test_detect_mounts_lists_root_first_and_no_pseudo_filesystems() -> None:
    mounts = detect.detect_mounts()
    assert mounts[0] == "/"
    assert len(mounts) == len(set(mounts))
    fstype = {p.mountpoint: p.fstype for p in psutil.disk_partitions(all=True)}
    for mount in mounts[1:]:
        assert fstype.get(mount) not in detect.PSEUDO_FILESYSTEMS


# --- the Frappe starter ---------------------------------------------------------------------


def frappe_text(bench: Path) -> str:
    return starter.frappe_config(SITE, bench, mounts=["/"])


def test_frappe_config_reads_the_database_and_redis_from_the_bench(tmp_path: Path) -> None:
    bench = make_bench(tmp_path, SITE_CONFIG, COMMON)
    probes = probes_by_name(frappe_text(bench))

    url = make_url(probes["database"]["url"])
    assert (url.drivername, url.username, url.password) == (
        "mysql+pymysql",
        "_5e5c0a1b2c",
        "s3cr@t/pw:1",  # special characters survive the URL
    )
    assert (url.host, url.port, url.database) == ("127.0.0.1", 3306, "_5e5c0a1b2c")
    assert probes["redis-cache"]["url"] == "redis://127.0.0.1:13001"
    assert probes["redis-queue"]["url"] == "redis://127.0.0.1:11002"
    assert "redis://127.0.0.1:11002" in probes["job-queue"]["command"]
    bench_id = str(bench.resolve()).strip("/").replace("/", "-")
    assert f"rq:queue:{bench_id}:default" in probes["job-queue"]["command"]
    assert probes["site-up"]["url"] == f"https://{SITE}/api/method/ping"
    assert probes["http-5xx"]["path"] == str(bench / "logs" / "monitor.json.log")
    assert probes["http-5xx"].get("enabled", True) is True  # monitor: 1 is set


def test_frappe_config_reproduces_the_original_checks_and_severities(tmp_path: Path) -> None:
    probes = probes_by_name(frappe_text(make_bench(tmp_path, SITE_CONFIG, COMMON)))
    expected = {  # name: (kind, warn, critical, severity), from original-system.md
        "errors-last-hour": ("sql", None, 10, 1),
        "timeout-errors": ("sql", None, 5, 3),
        "job-queue": ("command", None, 20, 3),
        "scheduler-activity": ("sql", 30, None, 2),
        "daily-jobs": ("sql", None, 25, 2),
        "dues-processing": ("sql", 4, 25, 2),
        "db-connections": ("sql", 80, 100, 2),
        "cpu": ("host", None, 80, 2),
        "memory": ("host", None, 85, 2),
        "disk-root": ("host", 80, 90, 1),
        "http-5xx": ("logfile", 5, 10, 2),
    }
    for name, values in expected.items():
        p = probes[name]
        assert (p["kind"], p.get("warn"), p.get("critical"), p["severity"]) == values, name
    assert (probes["api-latency"]["latency_warn"], probes["api-latency"]["latency_critical"]) == (
        "1s",
        "2s",
    )
    assert probes["api-latency"]["body_contains"] == "pong"
    assert probes["redis-cache"]["kind"] == "redis"
    for name in ("errors-last-hour", "timeout-errors", "daily-jobs", "dues-processing"):
        assert probes[name]["depends_on"] == ["database"]


def test_frappe_config_validates(tmp_path: Path) -> None:
    cfg = parse_config(frappe_text(make_bench(tmp_path, SITE_CONFIG, COMMON)), "frappe.yaml")
    assert cfg.site == SITE
    assert {c.name for c in cfg.components} == {"site", "database", "cache", "jobs", "host"}


def test_frappe_config_without_bench_files_has_edit_placeholders_and_validates(
    tmp_path: Path,
) -> None:
    text = frappe_text(make_bench(tmp_path))
    probes = probes_by_name(text)
    assert "EDIT_DB_PASSWORD" in probes["database"]["url"]
    assert text.count("# EDIT:") >= 3  # database, redis cache, redis queue
    assert probes["redis-cache"]["url"] == "redis://127.0.0.1:13000"
    parse_config(text, "frappe.yaml")


def test_frappe_config_disables_the_log_probe_until_monitor_is_on(tmp_path: Path) -> None:
    site_config = {k: v for k, v in SITE_CONFIG.items() if k != "monitor"}
    text = frappe_text(make_bench(tmp_path, site_config, COMMON))
    assert probes_by_name(text)["http-5xx"]["enabled"] is False
    assert f"bench --site {SITE} set-config monitor 1" in text


def test_frappe_config_uses_host_name_db_host_and_queue_credentials(tmp_path: Path) -> None:
    site_config = {**SITE_CONFIG, "host_name": "https://leden.example.nl", "db_host": "10.0.0.5"}
    common = {**COMMON, "rq_username": "bench", "rq_password": "q p", "db_port": 3307}
    probes = probes_by_name(frappe_text(make_bench(tmp_path, site_config, common)))
    assert probes["site-up"]["url"] == "https://leden.example.nl/api/method/ping"
    url = make_url(probes["database"]["url"])
    assert (url.host, url.port) == ("10.0.0.5", 3307)
    assert probes["redis-queue"]["url"] == "redis://bench:q%20p@127.0.0.1:11002"


def test_monitor_log_pattern_matches_this_sites_5xx_lines_only(tmp_path: Path) -> None:
    pattern = probes_by_name(frappe_text(make_bench(tmp_path, SITE_CONFIG, COMMON)))["http-5xx"][
        "pattern"
    ]

    def line(status: int, site: str = SITE, compact: bool = True) -> str:
        data = {
            "duration": 48211,
            "request": {"ip": "10.0.0.9", "method": "GET", "path": "/api/method/x"},
            "site": site,
            "timestamp": "2025-05-01 10:00:00.000000",
            "transaction_type": "request",
            "uuid": "7c1c",
        }
        data["request"]["status_code"] = status  # type: ignore[index]
        separators = (",", ":") if compact else (", ", ": ")
        return json.dumps(data, sort_keys=True, separators=separators)  # as frappe/monitor.py

    regex = re.compile(pattern)
    assert regex.search(line(500))
    assert regex.search(line(502, compact=False))
    assert regex.search(line(504))
    assert not regex.search(line(200))
    assert not regex.search(line(404))
    assert not regex.search(line(500, site="other.example.org"))
    assert not regex.search(line(500, site="erpxexample.org"))  # the dots are escaped
    job = '{"duration":10,"job":{"method":"x","scheduled":true,"wait":0},"site":"erp.example.org"}'
    assert not regex.search(job)
    log = [line(500), line(200), job, line(503, compact=False), line(502, site="x.org")]
    assert count_matches("\n".join(log).encode(), regex) == 2  # as the logfile probe counts


async def test_job_queue_command_counts_waiting_jobs_in_real_redis(tmp_path: Path) -> None:
    need_service("Redis", "127.0.0.1", 6379)
    import redis

    bench = make_bench(
        tmp_path, SITE_CONFIG, {**COMMON, "redis_queue": REDIS_URL, "bench_id": uuid.uuid4().hex}
    )
    entry = probes_by_name(frappe_text(bench))["job-queue"]
    config_class, impl_class = kinds()["command"]
    config = config_class.model_validate({**entry, "critical": 3})
    keys = [k for k in entry["command"] if k.startswith("rq:queue:") and ":" in k[9:]]
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.rpush(keys[0], "j1", "j2")  # <bench id>:default
        client.rpush(keys[2], "j3")  # <bench id>:long
        probe = impl_class(config, ProbeContext(clock=FakeClock()))
        result = await probe.run()
        assert (result.status, result.value) == (Status.OK, 3), result.message
        client.rpush(keys[1], "j4")  # <bench id>:short
        result = await probe.run()
        assert (result.status, result.value) == (Status.CRITICAL, 4), result.message
    finally:
        client.delete(*keys)
        client.close()


async def test_frappe_sql_probes_measure_the_right_things_on_mariadb(tmp_path: Path) -> None:
    """Each generated sql probe, run as written against a database shaped like Frappe's."""
    need_service("MariaDB", "127.0.0.1", 3306)
    probes = probes_by_name(frappe_text(make_bench(tmp_path, SITE_CONFIG, COMMON)))
    name = f"nw_frappe_{uuid.uuid4().hex[:10]}"
    url = MARIADB_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    config_class, impl_class = kinds()["sql"]

    async def measure(*names: str) -> dict[str, float | None]:
        values: dict[str, float | None] = {}
        for probe_name in names:
            config = config_class.model_validate({**probes[probe_name], "url": url})
            probe = impl_class(config, ProbeContext(clock=FakeClock()))
            try:
                result = await probe.run()
            finally:
                await probe.close()
            assert result.status is not Status.UNKNOWN, (probe_name, result.message)
            values[probe_name] = result.value
        return values

    admin = create_engine(MARIADB_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    site_db = create_engine(url)
    try:
        with site_db.begin() as conn:
            for ddl in FRAPPE_TABLES:
                conn.execute(text(ddl))
        never = await measure("scheduler-activity", "dues-processing")
        with site_db.begin() as conn:
            for row in _frappe_rows(frappe_bench.SITE_NOW):
                conn.execute(text(row))
        values = await measure(*(n for n, p in probes.items() if p["kind"] == "sql"))
    finally:
        site_db.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()

    assert never == {"scheduler-activity": 999999, "dues-processing": 999999}  # never ran
    assert values["database"] is not None  # connectivity: the round trip in ms
    assert values["errors-last-hour"] == 3
    assert values["timeout-errors"] == 2
    assert values["scheduler-activity"] == pytest.approx(10, abs=0.5)  # minutes
    assert values["daily-jobs"] == pytest.approx(26, abs=0.05)  # hours, stopped job ignored
    assert values["dues-processing"] == pytest.approx(5, abs=0.05)  # hours, failed run ignored
    assert values["db-connections"] >= 1


FRAPPE_TABLES = (
    "CREATE TABLE `tabSingles` (doctype VARCHAR(140), field VARCHAR(140), value TEXT)",
    "CREATE TABLE `tabError Log` (name VARCHAR(140) PRIMARY KEY, creation DATETIME(6),"
    " method VARCHAR(140), error LONGTEXT) COLLATE utf8mb4_unicode_ci",
    "CREATE TABLE `tabScheduled Job Type` (name VARCHAR(140) PRIMARY KEY, method VARCHAR(140),"
    " frequency VARCHAR(140), stopped INT DEFAULT 0, last_execution DATETIME(6))",
    "CREATE TABLE `tabScheduled Job Log` (name VARCHAR(140) PRIMARY KEY, creation DATETIME(6),"
    " scheduled_job_type VARCHAR(140), status VARCHAR(140))",
)


JOB_TYPE = "`tabScheduled Job Type`"


def _frappe_rows(now: str) -> list[str]:
    def ago(amount: str) -> str:
        return f"{now} - INTERVAL {amount}"

    return [
        "INSERT INTO `tabSingles` VALUES ('System Settings', 'time_zone', 'Europe/Amsterdam')",
        f"INSERT INTO `tabError Log` VALUES ('e1', {ago('10 MINUTE')}, 'Sync', 'x')",
        f"INSERT INTO `tabError Log` VALUES ('e2', {ago('20 MINUTE')}, 'API', 'RequestTimeout')",
        f"INSERT INTO `tabError Log` VALUES ('e3', {ago('59 MINUTE')}, 'Gateway timeout', '')",
        f"INSERT INTO `tabError Log` VALUES ('e4', {ago('2 HOUR')}, 'Old timeout', '')",
        f"INSERT INTO `tabError Log` VALUES ('e5', {ago('3 HOUR')}, 'Old', '')",
        f"INSERT INTO {JOB_TYPE} VALUES ('a', 'x.flush', 'All', 0, {ago('10 MINUTE')})",
        f"INSERT INTO {JOB_TYPE} VALUES ('d', 'x.daily', 'Daily', 0, {ago('26 HOUR')})",
        f"INSERT INTO {JOB_TYPE} VALUES ('s', 'x.old', 'Daily', 1, {ago('99 HOUR')})",
        f"INSERT INTO {JOB_TYPE} VALUES ('n', 'x.new', 'Daily Long', 0, NULL)",
        f"INSERT INTO `tabScheduled Job Log` VALUES ('l1', {ago('5 HOUR')},"
        " 'tasks.process_dues', 'Complete')",
        f"INSERT INTO `tabScheduled Job Log` VALUES ('l2', {ago('1 HOUR')},"
        " 'tasks.process_dues', 'Failed')",
        f"INSERT INTO `tabScheduled Job Log` VALUES ('l3', {ago('1 MINUTE')},"
        " 'email.flush', 'Complete')",
    ]


def test_frappe_config_on_postgres_uses_its_url_and_asks_to_translate_queries(
    tmp_path: Path,
) -> None:
    site_config = {**SITE_CONFIG, "db_type": "postgres"}
    text = frappe_text(make_bench(tmp_path, site_config, COMMON))
    url = make_url(probes_by_name(text)["database"]["url"])
    assert (url.drivername, url.port) == ("postgresql+psycopg", 5432)
    assert "# EDIT: this site runs on PostgreSQL" in text
    parse_config(text, "frappe.yaml")


def test_validate_reads_unquoted_business_hours_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "nachtwacht.yaml"
    path.write_text("business_hours:\n  start: 08:30\n  end: 17:00\nprobes: []\n", encoding="utf-8")
    result = runner.invoke(app, ["config", "validate", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert f"{path}: ok" in result.stdout
