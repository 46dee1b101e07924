"""The `journal` security source against a REAL journal: journal files written by
systemd-journal-remote from journal export format, read by the real journalctl; sshd's
failures fire at the shipped threshold, polls read only new entries, a restart resumes from
the stored cursor, a broken journalctl is the module's health error."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import ConfigError
from nachtwacht.engine.runtime import Runtime
from nachtwacht.security import engine as security_engine
from nachtwacht.security import report_health
from nachtwacht.security.journal import Journal, message_text
from nachtwacht.security.models import DEFAULT_RULES, FAILED_LOGIN, LoginEvent, Source
from nachtwacht.security.parsers import SshdParser
from nachtwacht.security.watch import Watch
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store, meta_key
from tests.conftest import IN_CI
from tests.helpers import settings_for
from tests.incident_fixtures import site
from tests.test_security_detectors import T0, syslog

REMOTE = Path("/lib/systemd/systemd-journal-remote")
BRUTE = "203.0.113.9"


@pytest.fixture(autouse=True)
def _journal_tools() -> None:
    missing = [p for p in (str(REMOTE), "journalctl") if shutil.which(p) is None]
    if missing:
        why = f"{', '.join(missing)} missing: bash scripts/install-debian-packages.sh"
        if IN_CI:
            pytest.fail(f"{why} (CI=true requires it; make system-deps installs it)")
        pytest.skip(why)


def export(ts: float, message: str | bytes, unit: str = "ssh.service") -> bytes:
    """One entry in journal export format; a message that is not UTF-8 as a binary field."""
    head = f"__REALTIME_TIMESTAMP={int(ts * 1_000_000)}\n_SYSTEMD_UNIT={unit}\n".encode()
    if isinstance(message, bytes):
        return head + b"MESSAGE\n" + struct.pack("<Q", len(message)) + message + b"\n\n"
    return head + f"MESSAGE={message}\n\n".encode()


def write(journal: Path, *entries: bytes) -> None:
    """Append entries to a journal file (created on first use) with systemd-journal-remote."""
    subprocess.run(
        [str(REMOTE), f"--output={journal}", "-"],
        input=b"".join(entries),
        check=True,
        capture_output=True,
        timeout=60,
    )


def failed(ts: float, addr: str = BRUTE, user: str = "root", port: int = 4242) -> bytes:
    return export(ts, f"Failed password for {user} from {addr} port {port} ssh2")


def alerts(store: Store) -> list[tuple[str, str]]:
    a = t.alerts.c
    with store.connect() as conn:
        return [tuple(r) for r in conn.execute(select(a.fingerprint, a.status).order_by(a.id))]


def test_failed_passwords_fire_at_the_shipped_threshold_and_only_new_entries_are_read(
    sqlite_store: Store, tmp_path: Path
) -> None:
    journal = tmp_path / "ssh.journal"
    # history before first sight is not read: from now on, as a file from its end
    write(journal, *(failed(T0 - 100 + i) for i in range(10)))
    clock = FakeClock(T0)
    source = Source(name="ssh", kind="journal", file=str(journal))
    assert source.units == ["ssh.service", "sshd.service"]
    watch = Watch(sqlite_store, site(sqlite_store), clock, [source])
    assert watch.poll().findings == []
    threshold = DEFAULT_RULES[FAILED_LOGIN].threshold
    write(
        journal,
        *(failed(T0 + i) for i in range(threshold - 1)),
        export(T0 + 5, f"Failed password for root from {BRUTE} port 1 ssh2", unit="cron.service"),
        export(T0 + 6, f"Connection closed by {BRUTE} port 2 [preauth]"),
    )
    clock.set(T0 + 10)
    assert watch.poll().findings == []  # one short of the threshold; cron's line is not sshd's
    assert watch.detector.events == threshold - 1
    write(journal, failed(T0 + 20, user="admin"))
    clock.set(T0 + 30)
    polled = watch.poll()
    assert [(f.rule, f.key, f.count) for f in polled.findings] == [(FAILED_LOGIN, BRUTE, threshold)]
    assert watch.detector.events == threshold  # the second poll read only the new entry
    assert alerts(sqlite_store) == [(f"security:failed_login:{BRUTE}", "firing")]
    watch.close()


def test_a_restart_resumes_from_the_stored_cursor_without_recounting(
    sqlite_store: Store, tmp_path: Path
) -> None:
    # a second journal file in the directory is read too (journald's rotation makes many)
    first, second = tmp_path / "a.journal", tmp_path / "b.journal"
    write(first, *(failed(T0 + i, addr="198.51.100.1") for i in range(3)))
    clock = FakeClock(T0 + 10)
    settings = site(sqlite_store)
    source = Source(name="ssh", kind="journal", directory=str(tmp_path), from_start=True)
    watch = Watch(sqlite_store, settings, clock, [source])
    assert watch.poll().findings == []
    assert watch.detector.events == 3
    with sqlite_store.connect() as conn:
        stored = sqlite_store.get_meta(conn, meta_key("security.", "ssh"))
        security = settings.security.model_copy(update={"sources": [source]})
        lag = report_health.health(conn, security, clock.now()).sources
    assert stored is not None and stored["cursor"].startswith("s=")
    assert [(s.path, s.note) for s in lag] == [
        (f"journal: ssh.service, sshd.service in {tmp_path}", "read up to its stored cursor")
    ]
    watch.close()

    write(second, *(failed(T0 + 20 + i, addr="198.51.100.1") for i in range(2)))
    again = Watch(sqlite_store, settings, clock, [source])
    polled = again.poll()
    # only the two new entries: the three before the restart are not counted again
    assert again.detector.events == 2 and polled.findings == []
    assert again.poll().findings == [] and again.detector.events == 2
    again.close()


def test_a_backlog_is_read_a_limited_number_of_entries_a_poll(
    sqlite_store: Store, tmp_path: Path
) -> None:
    journal = tmp_path / "x.journal"
    write(journal, *(failed(T0 + i, port=i) for i in range(7)))
    source = Source(name="ssh", kind="journal", file=str(journal), from_start=True)
    watch = Watch(sqlite_store, site(sqlite_store), FakeClock(T0 + 10), [source])
    watch.max_rows = 3
    seen = []
    for _ in range(3):
        polled = watch.poll()
        seen.append((watch.detector.events, polled.behind))
    assert seen == [
        (3, {"ssh": "more than 3 entries"}),
        (6, {"ssh": "more than 3 entries"}),
        (7, {}),
    ]
    watch.close()


def test_output_is_capped_and_the_rest_read_next_time(tmp_path: Path) -> None:
    journal = tmp_path / "x.journal"
    write(journal, *(failed(T0 + i, port=i) for i in range(4)))
    reader = Journal(Source(name="j", kind="journal", file=str(journal)), {"cursor": ""}, 0)
    reader.max_bytes = 1  # past the cap after the first chunk: its complete entries count
    events: list = []
    assert reader.read(events, 100) == (None, True)
    first = len(events)
    reader.max_bytes = 1024 * 1024
    assert reader.read(events, 100) == (None, False)
    assert 1 <= first <= 4 and [e.ts for e in events] == [T0 + i for i in range(4)]


def test_times_are_utc_microseconds_and_non_utf8_messages_are_read(tmp_path: Path) -> None:
    journal = tmp_path / "x.journal"
    write(
        journal,
        failed(T0 + 0.25, user="root"),
        export(T0 + 1, b"Failed password for invalid user \xff\xfe from 192.0.2.7 port 9 ssh2"),
        export(T0 + 2, "Accepted publickey for deploy from 192.0.2.8 port 22 ssh2: ED25519 x"),
    )
    reader = Journal(Source(name="j", kind="journal", file=str(journal)), {"cursor": ""}, 0)
    events: list = []
    assert reader.read(events, 100) == (None, False)
    assert events == [
        LoginEvent(T0 + 0.25, BRUTE, "root", False),
        LoginEvent(T0 + 1, "192.0.2.7", "\ufffd\ufffd", False),
        LoginEvent(T0 + 2, "192.0.2.8", "deploy", True),
    ]
    assert message_text(None) is None and message_text([104, 105]) == "hi"


def test_the_sshd_parser_still_reads_syslog_lines_and_sshd_session() -> None:
    sshd = SshdParser(FakeClock(T0))
    line = syslog(T0, f"Failed password for root from {BRUTE} port 1 ssh2", "sshd-session[7]")
    assert sshd.parse(line) == LoginEvent(T0, BRUTE, "root", False)
    assert sshd.parse(syslog(T0, "Failed password for x from 1.2.3.4 port 1", "cron[1]")) is None
    assert sshd.ignored == 1


async def test_a_broken_journalctl_is_the_modules_health_error(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    access = tmp_path / "access.log"
    access.touch()
    missing = tmp_path / "gone.journal"
    yaml = f"""
security:
  sources:
    - {{name: ssh, kind: journal, file: {missing}}}
    - {{name: web, kind: nginx, path: {access}}}
"""
    rt = Runtime.build(settings_for(yaml, sqlite_store.url), sqlite_store, FakeClock(T0))
    try:
        security_engine.install(rt)
        assert not await rt.engine.tick_once("security")
        error = rt.engine.modules["security"].health.last_error or ""
        assert error.startswith("SecurityLogError: journal ssh: journalctl exited 1: ")
        assert "No such file or directory" in error
        # the other source is still read
        with sqlite_store.connect() as conn:
            assert sqlite_store.get_meta(conn, meta_key("security.", "web")) is not None
        write(missing, failed(T0))
        assert await rt.engine.tick_once("security")
        # journalctl not installed: the same health error, saying so
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))
        assert not await rt.engine.tick_once("security")
        error = rt.engine.modules["security"].health.last_error or ""
        assert "journal ssh: journalctl is not installed" in error
    finally:
        await rt.stop()


def test_journal_settings_are_checked(sqlite_store: Store) -> None:
    for source, error in (
        ("{name: j, kind: journal, path: /var/log/auth.log}", "not a path or url"),
        ("{name: j, kind: journal, directory: /a, file: /b.journal}", "not both"),
        ("{name: j, kind: sshd, path: /x, units: [ssh.service]}", "only kind journal takes"),
        ("{name: j, kind: journal, units: ['ssh service; rm']}", "not a systemd unit name"),
        ("{name: j, kind: journal, units: []}", "units"),
    ):
        with pytest.raises(ConfigError) as caught:
            settings_for(f"security:\n  sources:\n    - {source}\n", sqlite_store.url)
        assert error in str(caught.value), source


def test_the_journal_example_in_security_monitoring_md_is_valid(sqlite_store: Store) -> None:
    doc = Path(__file__).resolve().parent.parent / "docs" / "security-monitoring.md"
    blocks = re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.S)
    [example] = [b for b in blocks if "kind: journal" in b]
    sources = settings_for(example, sqlite_store.url).security.sources
    assert [(s.kind, s.units) for s in sources] == [
        ("journal", ["ssh.service", "sshd.service"]),
        ("journal", ["ssh.service"]),
    ]
    assert sources[1].directory == "/srv/journal/web1"
