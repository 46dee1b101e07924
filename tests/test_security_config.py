"""security.rules / probe_paths / login_paths / admins from the config file (issue 17): the
shipped defaults, overrides reaching the detectors, clear errors; a new network for an admin
account, remembered across a restart; a watch that falls behind says so in /healthz."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import ConfigError
from nachtwacht.engine.runtime import Runtime
from nachtwacht.security import engine as security_engine
from nachtwacht.security.detectors import Detector, network_of
from nachtwacht.security.models import (
    DEFAULT_LOGIN_PATHS,
    DEFAULT_PROBE_PATHS,
    DEFAULT_RULES,
    LoginEvent,
    Source,
)
from nachtwacht.security.watch import Watch
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.helpers import settings_for
from tests.test_security_detectors import T0, failed, nginx, syslog
from tests.test_security_watch import alerts, append

DAY = 86400.0


def test_the_shipped_defaults_are_the_original_thresholds(sqlite_store: Store) -> None:
    settings = settings_for("site: x\n", sqlite_store.url)
    thresholds = settings.security.thresholds()
    assert thresholds.rules == DEFAULT_RULES
    assert [(r.threshold, r.window, r.severity) for r in thresholds.rules.values()][:5] == [
        (5, 1800.0, 2),  # failed logins 5 per 30 min
        (5, 1800.0, 2),
        (3, 300.0, 3),  # unauthorised requests 3 per 5 min
        (5, 900.0, 3),  # CSRF failures 5 per 15 min
        (10, 3600.0, 3),  # rate-limit violations 10 per hour
    ]
    assert thresholds.probe_paths == DEFAULT_PROBE_PATHS
    assert thresholds.login_paths == DEFAULT_LOGIN_PATHS
    assert thresholds.admins == frozenset()
    # the defaults fire at the fifth failure, not the fourth
    detector = Detector(FakeClock(T0), thresholds)
    found = [detector.feed(LoginEvent(T0 + i, "192.0.2.1", "", False)) for i in range(5)]
    assert [len(f) for f in found] == [0, 0, 0, 0, 1]


def test_overrides_are_partial_and_reach_the_watch(sqlite_store: Store, tmp_path: Path) -> None:
    access, auth = tmp_path / "access.log", tmp_path / "auth.log"
    access.touch()
    auth.touch()
    yaml = f"""
security:
  sources:
    - {{name: web, kind: nginx, path: {access}}}
    - {{name: ssh, kind: sshd, path: {auth}}}
  rules:
    failed_login: {{threshold: 3, window: 10m}}
    unauthorized: {{severity: 2}}
    csrf: {{enabled: false}}
  probe_paths: [/secret-admin/]
  login_paths: {{replace: [/login]}}
"""
    settings = settings_for(yaml, sqlite_store.url)
    rules = settings.security.thresholds().rules
    assert (rules["failed_login"].threshold, rules["failed_login"].window) == (3, 600.0)
    assert rules["failed_login"].severity == 2  # left out: the default
    assert (rules["unauthorized"].threshold, rules["unauthorized"].severity) == (3, 2)
    assert "csrf" not in rules
    clock = FakeClock(T0)
    watch = Watch(sqlite_store, settings, clock, settings.security.sources)
    watch.poll()
    a, b, c = "192.0.2.10", "192.0.2.11", "192.0.2.12"
    append(auth, *(failed(T0 + i, addr=a) for i in range(3)))
    append(
        access,
        # the added probe path counts; the defaults still do
        *(nginx(T0 + i, b, p, 404) for i, p in enumerate(["/secret-admin/x", "/.env", "/.git/"])),
        # /login replaced Frappe's login path: three 401s there are failed logins
        *(nginx(T0 + i, c, "/login", 401, "POST") for i in range(3)),
        # and a 401 on Frappe's path is now only a refusal
        nginx(T0 + 5, c, "/api/method/login", 401, "POST"),
    )
    found = watch.poll().findings
    assert sorted((f.rule, f.key, f.severity) for f in found) == [
        ("failed_login", a, 2),
        ("failed_login", c, 2),
        ("probe_paths", b, 3),
    ]
    watch.close()


@pytest.mark.parametrize(
    ("yaml", "error"),
    [
        ("rules: {failed_logins: {threshold: 3}}", "unknown rule 'failed_logins'; the rules are"),
        ("rules: {failed_login: {threshold: 0}}", "threshold"),
        ("rules: {failed_login: {window: soon}}", "not a duration"),
        ("rules: {csrf: {severity: 5}}", "severity"),
        ("rules: {csrf: {limit: 5}}", "limit"),
        ("rules: {brute_force_success: {threshold: 2}}", "they are failed_login's"),
        ("rules: {new_network: {threshold: 2}}", "takes no threshold"),
        ("rules: {scanner_404: {window: 0s}}", "longer than 0"),
        ("probe_paths: [wp-login.php]", "start it with /"),
        ("login_paths: {only: [/login]}", "only"),
        ("admins: ['']", "1 to 140 characters"),
    ],
)
def test_bad_settings_are_clear_errors(sqlite_store: Store, yaml: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_for(f"security:\n  {yaml}\n", sqlite_store.url)
    assert error in str(caught.value)


# -- a new network for an admin account ------------------------------------------------------


def accepted(ts: float, user: str, addr: str) -> str:
    return syslog(ts, f"Accepted publickey for {user} from {addr} port 2 ssh2")


def test_networks_are_prefixes() -> None:
    assert network_of("203.0.113.66") == "203.0.113.0/24"
    assert network_of("::ffff:203.0.113.66") == "203.0.113.0/24"
    assert network_of("2001:db8:1:2::5") == "2001:db8:1::/48"
    assert network_of("not-an-ip") == "not-an-ip"


def test_an_admin_login_from_a_new_network_is_a_finding_remembered_across_restarts(
    sqlite_store: Store, tmp_path: Path
) -> None:
    auth = tmp_path / "auth.log"
    auth.touch()
    yaml = (
        f"security:\n  admins: [root]\n  sources:\n    - {{name: ssh, kind: sshd, path: {auth}}}\n"
    )
    settings = settings_for(yaml, sqlite_store.url)
    clock = FakeClock(T0)
    watch = Watch(sqlite_store, settings, clock, settings.security.sources)
    watch.poll()
    # the account's first network on record is learned, not reported
    append(auth, accepted(T0, "root", "192.0.2.10"))
    assert watch.poll().findings == []
    # the same /24, and a login of an account that is no admin from anywhere: nothing
    append(auth, accepted(T0 + 60, "root", "192.0.2.200"), accepted(T0 + 61, "deploy", "9.9.9.9"))
    assert watch.poll().findings == []
    watch.close()

    # a restart: the known network comes from the store
    clock.set(T0 + 30 * DAY)
    again = Watch(sqlite_store, settings, clock, settings.security.sources)
    append(
        auth,
        accepted(T0 + 30 * DAY, "root", "192.0.2.99"),
        accepted(T0 + 30 * DAY + 1, "root", "198.51.100.7"),
        accepted(T0 + 30 * DAY + 2, "root", "198.51.100.8"),  # the same new /24: one finding
    )
    found = again.poll().findings
    assert [(f.rule, f.key, f.severity, f.addr) for f in found] == [
        ("new_network", "user:root@198.51.100.0/24", 2, "198.51.100.7")
    ]
    assert alerts(sqlite_store) == [("security:new_network:user:root@198.51.100.0/24", 2, "firing")]
    again.close()

    # more than 90 days after its last login a network is new again
    clock.set(T0 + 30 * DAY + 91 * DAY)
    third = Watch(sqlite_store, settings, clock, settings.security.sources)
    append(auth, accepted(T0 + 121 * DAY + 5, "root", "192.0.2.10"))
    found = third.poll().findings
    assert [(f.rule, f.key) for f in found] == [("new_network", "user:root@192.0.2.0/24")]
    # ... and 198.51.100.0/24, seen 91 days ago, too; within a window a known one is not
    third.close()
    c = t.security_tallies.c
    with sqlite_store.connect() as conn:
        keys = set(conn.execute(select(c.key).where(c.kind == "admin_network")).scalars())
    assert keys == {"root@192.0.2.0/24", "root@198.51.100.0/24"}


def test_new_network_can_be_switched_off_and_its_window_changed() -> None:
    from nachtwacht.security.models import SecuritySettings

    off = SecuritySettings(admins=["a"], rules={"new_network": {"enabled": False}}).thresholds()
    detector = Detector(FakeClock(T0), off)
    detector.seen.add("a")
    assert detector.feed(LoginEvent(T0, "192.0.2.1", "a", True)) == []
    short = SecuritySettings(admins=["a"], rules={"new_network": {"window": "1d"}}).thresholds()
    detector = Detector(FakeClock(T0), short)
    assert detector.feed(LoginEvent(T0, "192.0.2.1", "a", True)) == []  # learned
    assert detector.feed(LoginEvent(T0 + DAY, "192.0.2.2", "a", True)) == []  # within a day
    [found] = detector.feed(LoginEvent(T0 + 2 * DAY + 1, "192.0.2.3", "a", True))
    assert found.key == "user:a@192.0.2.0/24"


# -- falling behind --------------------------------------------------------------------------


async def test_a_watch_that_falls_behind_says_so_in_healthz_and_skips_nothing(
    sqlite_store: Store, tmp_path: Path
) -> None:
    access = tmp_path / "access.log"
    access.touch()
    yaml = (
        f"security:\n  max_bytes_per_poll: 4096\n  sources:\n"
        f"    - {{name: web, kind: nginx, path: {access}}}\n"
    )
    clock = FakeClock(T0)
    rt = Runtime.build(settings_for(yaml, sqlite_store.url), sqlite_store, clock)
    try:
        security_engine.install(rt)
        assert await rt.engine.tick_once("security")
        per_poll = 4096 // (len(nginx(T0, "192.0.2.100", "/x", 404)) + 1)
        lines = (security_engine.CATCH_UP_POLLS + 1) * per_poll  # a poll more than a tick reads
        append(
            access, *(nginx(T0 + i, f"192.0.2.{100 + i % 100}", "/x", 404) for i in range(lines))
        )
        assert await rt.engine.tick_once("security")
        [health] = [m for m in rt.engine.health() if m["module"] == "security"]
        assert health["healthy"] is False
        assert str(health["detail"]).startswith("behind its logs: web ")
        assert int(str(health["detail"]).split()[-2]) > 0
        # the next tick catches up: healthy again, and every line was counted
        assert await rt.engine.tick_once("security")
        [health] = [m for m in rt.engine.health() if m["module"] == "security"]
        assert (health["healthy"], health["detail"]) == (True, None)
        c = t.security_tallies.c
        with sqlite_store.connect() as conn:
            counted = conn.execute(
                select(c.n).where(c.kind == "not_found", c.key == "/x")
            ).scalar_one()  # the path's row (each address has one too)
        assert counted == lines
    finally:
        await rt.stop()


def test_a_poll_reports_what_it_left_unread(sqlite_store: Store, tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    access.touch()
    settings = settings_for("security:\n  max_bytes_per_poll: 4096\n", sqlite_store.url)
    watch = Watch(
        sqlite_store, settings, FakeClock(T0), [Source(name="web", kind="nginx", path=str(access))]
    )
    watch.poll()
    append(access, *(nginx(T0, "192.0.2.1", "/x", 404) for _ in range(100)))
    polled = watch.poll()
    assert set(polled.behind) == {"web"} and polled.behind["web"].endswith(" bytes")
    watch.close()
