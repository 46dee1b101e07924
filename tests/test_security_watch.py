"""security.watch: real log files tailed into the detector, findings recorded with the files'
positions in one transaction; a restart resumes where the store says; rotation is followed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select

from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import ConfigError
from nachtwacht.engine.runtime import Runtime
from nachtwacht.security import engine as security_engine
from nachtwacht.security.models import Source
from nachtwacht.security.watch import Watch
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.helpers import settings_for
from tests.incident_fixtures import site
from tests.test_security_detectors import T0, failed, nginx, syslog


def append(path: Path, *lines: str) -> None:
    with path.open("a") as f:
        f.write("".join(line + "\n" for line in lines))


def alerts(store: Store) -> list[tuple[str, int, str]]:
    a = t.alerts.c
    with store.connect() as conn:
        rows = conn.execute(select(a.fingerprint, a.severity, a.status).order_by(a.id)).all()
    return [tuple(r) for r in rows]


def test_sources_are_tailed_into_alerts_and_a_restart_resumes(
    sqlite_store: Store, tmp_path: Path
) -> None:
    access, auth = tmp_path / "access.log", tmp_path / "auth.log"
    append(access, nginx(T0 - 60, "192.0.2.1", "/.env", 404))  # history: before first sight
    auth.touch()
    clock = FakeClock(T0)
    sources = [
        Source(name="web", kind="nginx", path=str(access)),
        Source(name="ssh", kind="sshd", path=str(auth)),
    ]
    settings = site(sqlite_store)
    watch = Watch(sqlite_store, settings, clock, sources)
    assert watch.poll().findings == []

    scanner, brute = "45.155.205.9", "203.0.113.66"
    append(access, *(nginx(T0 + i, scanner, p, 404) for i, p in enumerate(["/.env", "/.git/"])))
    append(auth, *(failed(T0 + i, addr=brute, user=f"u{i}") for i in range(5)), "garbage\r")
    polled = watch.poll()
    assert [(f.rule, f.key) for f in polled.findings] == [("failed_login", brute)]
    assert watch.parsers["ssh"].malformed == 1

    # a restart: a new watch reads only what was appended since the stored positions
    watch.close()
    clock.set(T0 + 30)
    again = Watch(sqlite_store, settings, clock, sources)
    append(access, nginx(T0 + 20, scanner, "/wp-login.php", 404))
    append(auth, syslog(T0 + 25, f"Accepted password for deploy from {brute} port 2 ssh2"))
    polled = again.poll()
    assert again.detector.events == 2
    # the restarted detector's windows are empty: the scanner's third probe path is its first
    assert polled.findings == []
    assert alerts(sqlite_store) == [(f"security:failed_login:{brute}", 2, "firing")]


def test_a_rotated_log_is_read_to_its_end_then_the_new_one(
    sqlite_store: Store, tmp_path: Path
) -> None:
    access = tmp_path / "access.log"
    access.touch()
    clock = FakeClock(T0)
    watch = Watch(
        sqlite_store,
        site(sqlite_store),
        clock,
        [Source(name="web", kind="nginx", path=str(access))],
    )
    watch.poll()
    a = "192.0.2.77"
    append(access, nginx(T0, a, "/app", 403), nginx(T0 + 1, a, "/app", 403))
    access.rename(tmp_path / "access.log.1")
    append(access, nginx(T0 + 2, a, "/app", 401))
    polled = watch.poll()
    assert [(f.rule, f.key) for f in polled.findings] == [("unauthorized", a)]
    assert alerts(sqlite_store) == [(f"security:unauthorized:{a}", 3, "firing")]
    # five minutes of quiet later the sweep clears it and the alert resolves
    clock.set(T0 + 2 + 301)
    polled = watch.poll()
    assert [(f.rule, f.firing) for f in polled.findings] == [("unauthorized", False)]
    assert alerts(sqlite_store) == [(f"security:unauthorized:{a}", 3, "resolved")]
    watch.close()


def test_a_missing_source_is_an_error_and_the_others_are_read(
    sqlite_store: Store, tmp_path: Path
) -> None:
    access = tmp_path / "access.log"
    access.touch()
    sources = [
        Source(name="gone", kind="sshd", path=str(tmp_path / "nope.log")),
        Source(name="web", kind="nginx_json", path=str(access)),
    ]
    watch = Watch(sqlite_store, site(sqlite_store), FakeClock(T0), sources)
    watch.poll()
    append(
        access,
        *(
            f'{{"msec": {T0 + i}, "remote_addr": "192.0.2.5", "request": "GET /x", "status": 429}}'
            for i in range(10)
        ),
    )
    polled = watch.poll()
    assert len(polled.errors) == 1 and "not found" in polled.errors[0]
    assert [(f.rule, f.key) for f in polled.findings] == [("rate_limit", "192.0.2.5")]
    watch.close()


async def test_the_engine_module_runs_the_watch_from_the_config(
    sqlite_store: Store, tmp_path: Path
) -> None:
    access, missing = tmp_path / "access.log", tmp_path / "auth.log"
    access.touch()
    yaml = f"""
security:
  interval: 5s
  sources:
    - {{name: web, kind: nginx, path: {access}}}
    - {{name: ssh, kind: sshd, path: {missing}}}
"""
    clock = FakeClock(T0)
    rt = Runtime.build(settings_for(yaml, sqlite_store.url), sqlite_store, clock)
    try:
        security_engine.install(rt)
        assert rt.engine.modules["security"].interval == 5.0
        assert not await rt.engine.tick_once("security")
        health = rt.engine.modules["security"].health
        assert health.last_error == f"SecurityLogError: sshd log {missing} not found"
        missing.touch()
        assert await rt.engine.tick_once("security")
        a = "192.0.2.40"
        append(access, *(nginx(T0 + i, a, "/.env", 404) for i in range(3)))
        assert await rt.engine.tick_once("security")
        assert alerts(sqlite_store) == [(f"security:probe_paths:{a}", 3, "firing")]
    finally:
        await rt.stop()


def test_source_names_are_unique_and_kinds_known(sqlite_store: Store) -> None:
    for yaml, error in (
        (
            "security:\n  sources:\n    - {name: a, kind: nginx, path: /x}\n"
            "    - {name: a, kind: sshd, path: /y}\n",
            "'a' is already used",
        ),
        ("security:\n  sources:\n    - {name: a, kind: apache, path: /x}\n", "kind"),
    ):
        with pytest.raises(ConfigError) as caught:
            settings_for(yaml, sqlite_store.url)
        assert error in str(caught.value)


def test_the_examples_in_security_monitoring_md_are_valid(sqlite_store: Store) -> None:
    doc = Path(__file__).resolve().parent.parent / "docs" / "security-monitoring.md"
    # the journal's example is tests/test_security_journal.py's
    blocks = re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.S)
    # the auto_block example is tests/test_security_autoblock.py's
    files, rules, sources = [
        b for b in blocks if "kind: journal" not in b and "auto_block" not in b
    ]
    settings = settings_for(files, sqlite_store.url)
    assert [s.kind for s in settings.security.sources] == ["nginx", "nginx_json", "sshd"]
    assert settings.security.sources[2].timezone == "Europe/Amsterdam"
    thresholds = settings_for(rules, sqlite_store.url).security.thresholds()
    assert (
        thresholds.rules["failed_login"].threshold,
        thresholds.rules["failed_login"].window,
    ) == (
        10,
        600.0,
    )
    assert thresholds.rules["new_network"].window == 30 * 86400.0
    assert "scanner_404" not in thresholds.rules
    assert thresholds.probe_paths[-2:] == ("/old-admin/", "/backup.zip")
    assert thresholds.login_paths == ("/api/method/login", "/login")
    assert thresholds.admins == {"Administrator", "root"}
    kinds = [s.kind for s in settings_for(sources, sqlite_store.url).security.sources]
    assert kinds == ["frappe_activity", "nachtwacht"]


def test_sshd_classic_times_are_read_in_the_sources_timezone(
    sqlite_store: Store, tmp_path: Path
) -> None:
    auth = tmp_path / "auth.log"
    auth.touch()
    source = Source(name="ssh", kind="sshd", path=str(auth), timezone="Europe/Amsterdam")
    watch = Watch(sqlite_store, site(sqlite_store), FakeClock(T0), [source])
    watch.poll()
    # 04:00 in Amsterdam (winter, +01:00) is T0, 03:00 UTC
    line = "Dec  8 04:00:0{} web1 sshd[1]: Failed password for x from 1.2.3.4 port 1 ssh2"
    append(auth, *(line.format(i) for i in range(5)))
    found = watch.poll().findings
    assert [(f.rule, f.first_ts, f.ts) for f in found] == [
        ("failed_login", T0, T0 + 4),
        ("failed_login_account", T0, T0 + 4),
    ]
    watch.close()


def test_findings_of_a_poll_whose_commit_failed_are_recorded_by_the_next(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault: the store is locked when a brute force's finding is committed. The next poll
    rereads the lines from the stored position, but the detector already counts the address
    as firing: its dedup must not swallow the alert that never reached the store."""
    from sqlalchemy.exc import OperationalError

    from nachtwacht.security import service as security_service
    from nachtwacht.store.db import StoreError

    auth = tmp_path / "auth.log"
    auth.touch()
    clock = FakeClock(T0)
    settings = site(sqlite_store)
    watch = Watch(sqlite_store, settings, clock, [Source(name="ssh", kind="sshd", path=str(auth))])
    watch.poll()
    brute = "203.0.113.66"
    append(auth, *(failed(T0 + i, addr=brute, user=f"u{i}") for i in range(5)))
    real = security_service.record

    def locked(*args: object, **kwargs: object) -> object:
        raise OperationalError("INSERT INTO alerts", {}, Exception("database is locked"))

    monkeypatch.setattr(security_service, "record", locked)
    with pytest.raises(StoreError):
        watch.poll()
    assert alerts(sqlite_store) == []
    monkeypatch.setattr(security_service, "record", real)
    clock.set(T0 + 10)
    watch.poll()
    assert alerts(sqlite_store) == [(f"security:failed_login:{brute}", 2, "firing")]
