"""`nachtwacht doctor` on a good installation and on broken ones, with real servers."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from typer.testing import CliRunner, Result

from nachtwacht.cli.main import app
from nachtwacht.spool.status import write_state
from nachtwacht.store.db import Store
from nachtwacht.store.migrate import alembic_config, upgrade
from nachtwacht.watchdog.doctor import GB, disk_level, skew_level
from tests.conftest import closed_port
from tests.notify_helpers import Mailbox, Receiver, smtp_server

# the newest migration the code has (the doctor names it)
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()

runner = CliRunner()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
async def probe_target() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
def mailbox() -> Iterator[tuple[int, Mailbox]]:
    controller, box = smtp_server()
    yield controller.port, box
    controller.stop()


def config(tmp_path: Path, store_url: str, body: str) -> Path:
    path = tmp_path / "nachtwacht.yaml"
    path.write_text(f"store:\n  url: {store_url}\n{body}")
    return path


async def doctor(*args: str) -> Result:
    # in a thread: the receivers answer from this test's event loop meanwhile
    return await asyncio.to_thread(runner.invoke, app, ["doctor", *args])


def confirm_every_channel(path: Path, store: Store) -> None:
    """Send every contact a confirm link and follow it (the verification test does it by mail)."""
    import time

    from sqlalchemy import select

    from nachtwacht.config.loader import load_config
    from nachtwacht.oncall import verify
    from nachtwacht.store import tables as t

    cfg = load_config(str(path))
    store.migrate()
    now = time.time()
    with store.begin() as conn:
        verify.send(conn, cfg, now)
        for body in conn.execute(select(t.outbox.c.body)).scalars().all():
            for token in re.findall(r"/verify/([A-Za-z0-9_-]+)", body):
                verify.confirm(conn, token, now)


def levels(result: Result) -> dict[str, str]:
    data = json.loads(result.output)
    return {c["name"]: c["level"] for c in data["checks"]}


async def test_a_good_installation_is_all_ok_and_nothing_is_sent(
    tmp_path: Path,
    sqlite_store: Store,
    receiver: Receiver,
    probe_target: Receiver,
    mailbox: tuple[int, Mailbox],
) -> None:
    smtp_port, box = mailbox
    path = config(
        tmp_path,
        sqlite_store.url,
        f"""
notify:
  channels:
    hook: {{kind: webhook, url: "{receiver.url}/hook"}}
    mail: {{kind: email, host: 127.0.0.1, port: {smtp_port}, starttls: false}}
people:
  contacts:
    - {{id: alice, name: Alice, email: alice@example.org}}
incidents:
  public_url: https://nachtwacht.example.org
watchdog:
  deadman_url: {receiver.url}/ping/abcdefgh
probes:
  - name: site
    kind: http
    url: {probe_target.url}/
""",
    )
    confirm_every_channel(path, sqlite_store)  # a good installation's contacts are verified
    result = await doctor("--config", str(path))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    names = [line[6:24].strip() for line in lines]
    assert names == [
        "config",
        "store",
        "migrations",
        "audit chain",
        "disk data",
        "disk spool",
        "spool",
        "clock skew",
        "channel hook",
        "channel mail",
        "contacts",
        "deadman",
    ]
    assert all(line.startswith("ok ") for line in lines), result.output
    assert "EHLO ok" in result.output and "TCP connect ok" in result.output
    assert f"at head ({HEAD})" in result.output
    assert receiver.seen == [] and box.messages == []  # checked, not sent
    assert [s.method for s in probe_target.seen] == ["HEAD"]  # asked for its Date only


async def test_clock_skew_is_measured_against_the_store_server(
    tmp_path: Path, store: Store
) -> None:
    result = await doctor("--json", "--config", str(config(tmp_path, store.url, "")))
    data = json.loads(result.output)
    [skew] = [c for c in data["checks"] if c["name"] == "clock skew"]
    if store.dialect == "sqlite":
        assert skew["level"] == "skip" and "no http probe" in skew["message"]
    else:
        assert skew["level"] == "ok" and "against the store server" in skew["message"]
    assert levels(result)["store"] == "ok"
    # no channels at all: nobody could be paged, a warning
    assert levels(result)["channels"] == "warn" and data["exit_code"] == 1


async def test_a_broken_installation_fails_each_check_with_its_reason(tmp_path: Path) -> None:
    down = closed_port()
    path = config(
        tmp_path,
        f"postgresql+psycopg://nobody@127.0.0.1:{down}/x",
        f"""
spool:
  dir: {tmp_path / "spool"}
notify:
  channels:
    hook: {{kind: webhook, url: "http://127.0.0.1:{down}/hook"}}
    mail: {{kind: email, host: 127.0.0.1, port: {down}}}
""",
    )
    result = await doctor("--config", str(path))
    assert result.exit_code == 2
    by_name = {line[6:24].strip(): line for line in result.output.splitlines()}
    assert by_name["store"].startswith("fail") and "refused" in by_name["store"].lower()
    assert by_name["migrations"].startswith("skip")
    assert by_name["audit chain"].startswith("skip")
    assert by_name["clock skew"].startswith("skip")
    assert (
        by_name["channel hook"].startswith("fail") and "cannot connect" in by_name["channel hook"]
    )
    assert by_name["channel mail"].startswith("fail")
    assert by_name["deadman"].startswith("skip") and "nobody notices" in by_name["deadman"]


async def test_a_missing_sqlite_file_is_reported_and_not_created(tmp_path: Path) -> None:
    db = tmp_path / "nowhere" / "nachtwacht.db"
    result = await doctor("--config", str(config(tmp_path, f"sqlite:///{db}", "")))
    assert result.exit_code == 2
    assert f"no SQLite database at {db}" in result.output
    assert not db.parent.exists()


async def test_a_store_behind_the_code_is_a_warning(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(store.engine, "0002")
    store.dispose()
    result = await doctor("--json", "--config", str(config(tmp_path, store.url, "")))
    [check] = [c for c in json.loads(result.output)["checks"] if c["name"] == "migrations"]
    assert check["level"] == "warn" and f"store at 0002, code at {HEAD}" in check["message"]


async def test_serve_reporting_the_store_down_fails_the_spool_check(
    tmp_path: Path, sqlite_store: Store
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "0000000001.spool").write_bytes(b"x" * 5000)  # five kB of unstored records
    now = time.time()
    write_state(
        spool,
        {
            "at": now,
            "store": {"available": False, "down_since_iso": "2026-05-01T10:00:00Z"},
            "spool": {"bytes": 5000, "backlog_bytes": 5000},
        },
    )
    path = config(tmp_path, sqlite_store.url, f"spool:\n  dir: {spool}\n")
    result = await doctor("--config", str(path))
    [line] = [x for x in result.output.splitlines() if x[6:24].strip() == "spool"]
    assert line.startswith("fail")
    assert "store DOWN since 2026-05-01T10:00:00Z" in line and "0.0 MB waiting" in line


async def test_a_config_that_does_not_parse_is_one_fail_line_per_problem(tmp_path: Path) -> None:
    path = tmp_path / "nachtwacht.yaml"
    path.write_text("site: x\nwatchdog:\n  deadman_interval: soon\n  bogus: 1\n")
    result = await doctor("--config", str(path))
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert all(line.startswith("fail  config") for line in lines) and len(lines) == 2
    assert "deadman_interval" in result.output and "bogus" in result.output


def test_disk_and_skew_thresholds() -> None:
    assert disk_level("/d", 50 * GB, 100 * GB).level == "ok"
    assert disk_level("/d", 9 * GB, 100 * GB).level == "warn"  # under 10 %
    assert disk_level("/d", GB // 2, 4 * GB).level == "warn"  # 12 % but under 1 GB
    assert disk_level("/d", 1 * GB, 100 * GB).level == "fail"  # under 2 %
    assert skew_level(0.4, 0.01, "x").level == "ok"
    assert skew_level(-3.5, 0.01, "x").level == "warn"
    assert skew_level(3.5, 2.0, "x").level == "ok"  # within what the measurement can tell
    assert skew_level(120, 0.5, "x").level == "fail"
