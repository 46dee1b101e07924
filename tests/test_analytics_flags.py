"""The protocol's flags (stored, audited, switched at run time), the results cache, and what
enable_performance_optimization and enable_security_logging really do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from typer.testing import CliRunner

from nachtwacht.analytics import cache, flags, service
from nachtwacht.cli.main import app as cli
from nachtwacht.clock import FakeClock
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.auth_helpers import add_user, fast_hashing, login  # noqa: F401 - fixture
from tests.helpers import admin_token, settings_for
from tests.test_analytics_data import add_hours, add_issue

runner = CliRunner()
NOW = 1_800_000_000.0


@pytest.fixture(autouse=True)
def fresh_flag_cache() -> Iterator[None]:
    flags.invalidate()  # each test's store is new; never trust another test's reads
    yield
    flags.invalidate()


def test_flags_are_off_until_set_and_every_change_is_audited(store: Store) -> None:
    assert {f["name"]: f["enabled"] for f in service.list_flags(store)} == {
        "disable_advanced_analytics": False,
        "enable_performance_optimization": False,
        "enable_security_logging": False,
    }
    item = service.set_flag(store, "enable_security_logging", True, "ada", NOW, "192.0.2.7")
    assert item["enabled"] is True and item["updated_by"] == "ada" and item["updated_at"] == NOW
    service.set_flag(store, "enable_security_logging", False, "bob", NOW + 5)
    with store.connect() as conn:
        rows = conn.execute(
            select(t.audit_log).where(t.audit_log.c.action == "flag.set").order_by(t.audit_log.c.id)
        ).mappings()
        audit = [(r["actor"], r["target"], json.loads(r["detail_json"]), r["ip"]) for r in rows]
    assert audit == [
        ("ada", "enable_security_logging", {"enabled": True, "was": False}, "192.0.2.7"),
        ("bob", "enable_security_logging", {"enabled": False, "was": True}, None),
    ]
    with pytest.raises(flags.FlagError, match="unknown flag 'nope'"):
        service.set_flag(store, "nope", True, "ada", NOW)


def test_a_process_sees_its_own_change_at_once_and_others_within_the_ttl(
    sqlite_store: Store,
) -> None:
    assert flags.enabled(sqlite_store, "disable_advanced_analytics", ttl=60) is False
    service.set_flag(sqlite_store, "disable_advanced_analytics", True, "ada", NOW)
    assert flags.enabled(sqlite_store, "disable_advanced_analytics", ttl=60) is True

    # another process (the CLI) switches it back: this process trusts its read for the TTL...
    with sqlite_store.begin() as conn:
        conn.execute(update(t.flags).values(enabled=False))
    assert flags.enabled(sqlite_store, "disable_advanced_analytics", ttl=60) is True
    # ...and reads the store again once the last read is older than the TTL (0: always)
    assert flags.enabled(sqlite_store, "disable_advanced_analytics", ttl=0) is False


def test_cache_clear_takes_a_glob_and_counts(store: Store) -> None:
    keys = [
        "analytics_errors:days=7:env=*:project=*",
        "analytics_errors:days=1:env=production:project=*",
        "analytics_forecast",
        "analytics_baseline_compare",
        "a_b",
        "axb",
    ]
    with store.begin() as conn:
        for key in keys:
            cache.put(conn, key, {"k": key}, NOW, 60)
        assert cache.clear(conn, "analytics_errors*") == 2
        assert cache.clear(conn, "analytics_?orecast") == 1
        assert cache.clear(conn, "a_b") == 1  # `_` is literal, not LIKE's any-character
        assert [e["key"] for e in cache.entries(conn, NOW)] == ["analytics_baseline_compare", "axb"]
        assert cache.clear(conn) == 2
        assert cache.entries(conn, NOW) == []


def test_performance_flag_lengthens_the_cache_and_precomputes(sqlite_store: Store) -> None:
    settings = settings_for("probes: []\n", sqlite_store.url)
    with sqlite_store.begin() as conn:
        add_hours(conn, add_issue(conn, "x", NOW - 3600), {int(NOW // 3600): 4})

    first = service.error_patterns(sqlite_store, settings, NOW, 7)
    assert first["cache"]["hit"] is False and first["totals"]["events"] == 4
    again = service.error_patterns(sqlite_store, settings, NOW + 1, 7)
    assert again["cache"]["hit"] is True and again["totals"] == first["totals"]
    with sqlite_store.connect() as conn:
        [entry] = cache.entries(conn, NOW)
    assert entry["expires_at"] == NOW + settings.analytics.cache_ttl == NOW + 60

    service.clear_cache(sqlite_store, None)
    report = service.run_engine_once(sqlite_store, settings, NOW)
    assert report["warmed"] == []  # off: nothing computed ahead
    service.set_flag(sqlite_store, "enable_performance_optimization", True, "ada", NOW)
    report = service.run_engine_once(sqlite_store, settings, NOW)
    assert report["warmed"] == ["analytics_errors:days=7:env=*:project=*", "analytics_forecast"]
    with sqlite_store.connect() as conn:
        expiries = {e["key"]: e["expires_at"] for e in cache.entries(conn, NOW)}
    assert expiries == {
        "analytics_errors:days=7:env=*:project=*": NOW + 900,
        "analytics_forecast": NOW + 900,
    }
    # a page load after that is served from what the engine computed
    assert service.error_patterns(sqlite_store, settings, NOW + 30, 7)["cache"]["hit"] is True


def test_disabled_analytics_answer_clearly_and_come_back_at_run_time(sqlite_store: Store) -> None:
    settings = settings_for("probes: []\n", sqlite_store.url)
    service.set_flag(sqlite_store, "disable_advanced_analytics", True, "ada", NOW)
    for answer in (
        service.error_patterns(sqlite_store, settings, NOW, 7),
        service.forecasts(sqlite_store, settings, NOW),
    ):
        assert answer["disabled"] is True and answer["flag"] == "disable_advanced_analytics"
        assert "Probes, alerting and paging are not affected" in answer["message"]
    assert service.run_engine_once(sqlite_store, settings, NOW)["disabled"] is True
    service.set_flag(sqlite_store, "disable_advanced_analytics", False, "ada", NOW)
    assert service.error_patterns(sqlite_store, settings, NOW, 7)["totals"]["events"] == 0


# ---------------------------------------------------------------------------- CLI


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "nachtwacht.yaml"
    path.write_text(f"site: test\nstore:\n  url: sqlite:///{tmp_path / 'nw.db'}\n")
    return str(path)


def test_flags_and_cache_commands(config: str) -> None:
    args = ["disable_advanced_analytics", "on", "--actor", "vic", "-c", config]
    out = runner.invoke(cli, ["flags", "set", *args])
    assert out.exit_code == 0, out.output
    assert "disable_advanced_analytics is now on (was off)" in out.output
    listed = json.loads(runner.invoke(cli, ["flags", "list", "--json", "-c", config]).output)
    assert {f["name"]: (f["enabled"], f["updated_by"]) for f in listed}[
        "disable_advanced_analytics"
    ] == (True, "vic")

    flags.invalidate()
    off = runner.invoke(cli, ["analytics", "errors", "-c", config])
    assert off.exit_code == 3 and "advanced analytics are disabled" in off.output
    runner.invoke(cli, ["flags", "set", "disable_advanced_analytics", "off", "-c", config])
    flags.invalidate()
    on = runner.invoke(cli, ["analytics", "errors", "--days", "3", "--json", "-c", config])
    assert on.exit_code == 0, on.output
    assert json.loads(on.output)["days"] == 3

    cleared = runner.invoke(cli, ["cache", "clear", "analytics_errors*", "-c", config])
    assert cleared.output.strip() == "cleared 1 cached result matching analytics_errors*"
    assert "cleared 0 cached results" in runner.invoke(cli, ["cache", "clear", "-c", config]).output

    bad = runner.invoke(cli, ["flags", "set", "disable_everything", "on", "-c", config])
    assert bad.exit_code == 2 and "unknown flag 'disable_everything'" in bad.output
    bad = runner.invoke(cli, ["flags", "set", "enable_security_logging", "maybe", "-c", config])
    assert bad.exit_code == 2 and "neither on nor off" in bad.output


# ---------------------------------------------------------------------------- security log


def test_security_logging_writes_failures_successes_and_admin_changes(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    log_file = tmp_path / "security.log"
    settings = settings_for(
        f"analytics:\n  security_log: {log_file}\nprobes: []\n", sqlite_store.url
    )
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    admin = {"Authorization": f"Bearer {admin_token(sqlite_store)}"}
    viewer = {"Authorization": f"Bearer {admin_token(sqlite_store, role='viewer')}"}
    wrong = {"Authorization": "Bearer nwt_not-a-token"}
    with TestClient(app) as client:
        assert client.get("/api/v1/flags", headers=wrong).status_code == 401
        assert not log_file.exists()  # off: nothing written

        on = client.put(
            "/api/v1/flags/enable_security_logging", json={"enabled": True}, headers=admin
        )
        assert on.status_code == 200 and on.json()["enabled"] is True
        assert client.get("/api/v1/flags", headers=wrong).status_code == 401
        assert client.get("/api/v1/flags", headers=viewer).status_code == 200
        refused = client.put(
            "/api/v1/flags/enable_security_logging", json={"enabled": False}, headers=viewer
        )
        assert refused.status_code == 403
        assert client.delete("/api/v1/analytics/cache", headers=admin).status_code == 200
        assert client.get("/healthz").status_code in (200, 503)  # anonymous: not logged

    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [(x["event"], x["method"], x["status"], x["actor"]) for x in lines] == [
        ("admin.action", "PUT", 200, "token:test-admin"),  # switching it on is logged too
        ("auth.failure", "GET", 401, None),
        ("auth.success", "GET", 200, "token:test-viewer"),
        ("auth.failure", "PUT", 403, "token:test-viewer"),
        ("admin.action", "DELETE", 200, "token:test-admin"),
    ]
    assert lines[1]["path"] == "/api/v1/flags" and lines[1]["ip"] == "testclient"
    assert lines[1]["ts"].startswith("2027-01-15T08:00:00")  # the runtime's clock


@pytest.mark.usefixtures("fast_hashing")
def test_a_missing_csrf_token_is_logged_as_a_csrf_failure_and_fires_the_csrf_rule(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    """The CSRF rule's source (issue 17): Nachtwacht's own refusals of a session request or a
    login form without their CSRF token, as `csrf.failure`, read by the `nachtwacht` source."""
    from nachtwacht.security.detectors import Detector
    from nachtwacht.security.models import CSRF, CsrfEvent
    from nachtwacht.security.parsers import NachtwachtParser

    log_file = tmp_path / "security.log"
    settings = settings_for(
        f"analytics:\n  security_log: {log_file}\nprobes: []\n", sqlite_store.url
    )
    add_user(sqlite_store, clock, "ada", "admin")
    service.set_flag(sqlite_store, "enable_security_logging", True, "ada", clock.now())
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    with TestClient(app) as client:
        csrf = login(client, "ada")
        for _ in range(4):  # a forged form post from another site: the cookie, no token
            assert client.put("/api/v1/flags/enable_performance_optimization",
                              json={"enabled": True}).status_code == 403  # fmt: skip
        assert (
            client.put(
                "/api/v1/flags/enable_performance_optimization",
                json={"enabled": False},
                headers={"X-CSRF-Token": csrf},
            ).status_code
            == 200
        )
        # a login form without the login page's field
        form = client.post("/login", data={"username": "ada", "password": "x"})
        assert form.status_code == 403

    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    events = [x["event"] for x in lines]
    assert events.count("csrf.failure") == 5 and "auth.failure" not in events
    parser = NachtwachtParser()
    parsed = [parser.parse(line) for line in log_file.read_text().splitlines()]
    refusals = [e for e in parsed if isinstance(e, CsrfEvent)]
    assert len(refusals) == 5 and {e.addr for e in refusals} == {"testclient"}
    detector = Detector(clock)
    findings = [f for e in refusals for f in detector.feed(e)]
    # the shipped threshold: 5 in 15 minutes, and it fires at the fifth, not before
    assert [(f.rule, f.key, f.count) for f in findings] == [(CSRF, "testclient", 5)]
