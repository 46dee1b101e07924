"""Maintenance windows and silences: CLI and API doors, validation, and muting over time.

Time moves only by advancing a FakeClock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from nachtwacht.alerts import cli as alerts_cli
from nachtwacht.alerts import service, silences, windows
from nachtwacht.alerts.cli import maintenance_app, silence_app
from nachtwacht.alerts.maintenance import mute_reason
from nachtwacht.clock import FakeClock
from nachtwacht.config.schema import Settings
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.helpers import settings_for
from tests.test_alerts_external import alerts_app

AMS = ZoneInfo("Europe/Amsterdam")
runner = CliRunner()

PROBES = """
probes:
  - name: db
    kind: tcp
    host: 127.0.0.1
    port: 1
    component: database
  - name: web
    kind: tcp
    host: 127.0.0.1
    port: 2
    component: web
"""


def local(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=AMS).timestamp()


def _mute(conn: Any, settings: Settings, now: float, probe: str, component: str) -> str | None:
    return mute_reason(
        conn, settings, now, probe=probe, component=component, fingerprint=f"probe:{probe}"
    )


def _rows(store: Store, table: Any) -> int:
    with store.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _rows_in(config: Path, table: Any) -> int:
    store = _store_of(config)
    try:
        return _rows(store, table)
    finally:
        store.dispose()


# ---------------------------------------------------------------------------- store windows


def test_store_window_mutes_its_component_until_ended(store: Store, clock: FakeClock) -> None:
    settings = settings_for(PROBES, store.url)
    with store.begin() as conn:
        window_id = windows.add_window(
            conn,
            settings,
            name="MariaDB upgrade",
            starts_at=clock.now(),
            ends_at=clock.now() + 7200,
            now=clock.now(),
            created_by="ops",
            components=["database"],
        )
    with store.connect() as conn:
        assert _mute(conn, settings, clock.now(), "db", "database") == "maintenance:MariaDB upgrade"
        assert _mute(conn, settings, clock.now(), "web", "web") is None
    clock.advance(3600)
    with store.begin() as conn:
        assert _mute(conn, settings, clock.now(), "db", "database") is not None
        windows.end_window(conn, window_id, clock.now())
    with store.connect() as conn:
        assert _mute(conn, settings, clock.now(), "db", "database") is None
        listed = windows.list_windows(conn, settings, clock.now())
        assert listed == []
        [past] = windows.list_windows(conn, settings, clock.now(), include_past=True)
        assert past["state"] == "ended" and past["id"] == window_id


def test_store_window_stops_muting_at_its_end(sqlite_store: Store, clock: FakeClock) -> None:
    settings = settings_for(PROBES, sqlite_store.url)
    with sqlite_store.begin() as conn:
        windows.add_window(
            conn,
            settings,
            name="whole site",
            starts_at=clock.now() + 600,
            ends_at=clock.now() + 1200,
            now=clock.now(),
            created_by="ops",
        )
    with sqlite_store.connect() as conn:
        assert _mute(conn, settings, clock.now(), "web", "web") is None  # not started yet
        clock.advance(600)
        assert _mute(conn, settings, clock.now(), "web", "web") == "maintenance:whole site"
        clock.advance(599)
        assert _mute(conn, settings, clock.now(), "db", "database") is not None
        clock.advance(1)
        assert _mute(conn, settings, clock.now(), "db", "database") is None


def test_silence_mutes_its_probe_until_expired(store: Store, clock: FakeClock) -> None:
    settings = settings_for(PROBES, store.url)
    with store.begin() as conn:
        silence_id = silences.add_silence(
            conn,
            settings,
            matcher="probe:db",
            starts_at=clock.now(),
            ends_at=clock.now() + 1800,
            now=clock.now(),
            created_by="ops",
            comment="flapping during the migration",
        )
    with store.connect() as conn:
        assert _mute(conn, settings, clock.now(), "db", "database") == f"silence:{silence_id}"
        assert _mute(conn, settings, clock.now(), "web", "database") is None  # probe, not comp
    clock.advance(60)
    with store.begin() as conn:
        silences.expire_silence(conn, silence_id, clock.now())
    with store.connect() as conn:
        assert _mute(conn, settings, clock.now(), "db", "database") is None
        assert silences.list_silences(conn, clock.now()) == []
    with store.begin() as conn, pytest.raises(windows.WindowError, match="already expired"):
        silences.expire_silence(conn, silence_id, clock.now())


def test_fingerprint_silence_ends_on_its_own(sqlite_store: Store, clock: FakeClock) -> None:
    settings = settings_for(PROBES, sqlite_store.url)
    with sqlite_store.begin() as conn:
        silences.add_silence(
            conn,
            settings,
            matcher="fingerprint:am:1a30ba71cca2921f",
            starts_at=clock.now(),
            ends_at=clock.now() + 900,
            now=clock.now(),
            created_by="ops",
        )

    def muted(fp: str) -> str | None:
        with sqlite_store.connect() as conn:
            return mute_reason(
                conn, settings, clock.now(), probe=None, component="redis", fingerprint=fp
            )

    assert muted("am:1a30ba71cca2921f") is not None
    assert muted("am:ffffffffffffffff") is None
    clock.advance(900)
    assert muted("am:1a30ba71cca2921f") is None


def test_alert_in_a_window_is_recorded_without_paging_and_pages_after_it(
    sqlite_store: Store, clock: FakeClock
) -> None:
    settings = settings_for(PROBES, sqlite_store.url)

    def signal(fp: str) -> service.Signal:
        return service.Signal(
            fingerprint=fp,
            source="api",
            title=fp,
            component="database",
            severity=1,
            firing=True,
            started_at=clock.now(),
            detected_at=clock.now(),
        )

    with sqlite_store.begin() as conn:
        window_id = windows.add_window(
            conn,
            settings,
            name="failover test",
            starts_at=clock.now(),
            ends_at=clock.now() + 3600,
            now=clock.now(),
            created_by="ops",
            components=["database"],
        )
        during = service.process(conn, settings, signal("api:during"), clock.now())
    assert during.action == "opened" and during.muted_by == "maintenance:failover test"
    clock.advance(1800)
    with sqlite_store.begin() as conn:
        windows.end_window(conn, window_id, clock.now())
        after = service.process(conn, settings, signal("api:after"), clock.now())
    assert after.action == "opened" and after.muted_by is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": " "}, "name"),
        ({"probes": ["nope"]}, "probes"),
        ({"components": [""]}, "components"),
        ({"ends_at": 1_800_000_000.0 - 1}, "ends_at"),  # before the start
        ({"starts_at": 1_800_000_000.0 - 7200, "ends_at": 1_800_000_000.0 - 3600}, "ends_at"),
        ({"created_by": ""}, "created_by"),
    ],
)
def test_invalid_window_is_refused_naming_the_field_and_writes_nothing(
    sqlite_store: Store, clock: FakeClock, kwargs: dict[str, Any], field: str
) -> None:
    settings = settings_for(PROBES, sqlite_store.url)
    args: dict[str, Any] = {
        "name": "x",
        "starts_at": clock.now(),
        "ends_at": clock.now() + 60,
        "now": clock.now(),
        "created_by": "ops",
    } | kwargs
    with sqlite_store.begin() as conn, pytest.raises(windows.WindowError) as caught:
        windows.add_window(conn, settings, **args)
    assert caught.value.field == field and str(caught.value).startswith(f"{field}:")
    assert _rows(sqlite_store, t.maintenance) == 0


@pytest.mark.parametrize(
    ("matcher", "field"),
    [("probe:nope", "probe"), ("host:x", "matcher"), ("component:", "matcher"), ("", "matcher")],
)
def test_invalid_silence_matcher_is_refused(
    sqlite_store: Store, clock: FakeClock, matcher: str, field: str
) -> None:
    settings = settings_for(PROBES, sqlite_store.url)
    with sqlite_store.begin() as conn, pytest.raises(windows.WindowError) as caught:
        silences.add_silence(
            conn,
            settings,
            matcher=matcher,
            starts_at=clock.now(),
            ends_at=clock.now() + 60,
            now=clock.now(),
            created_by="ops",
        )
    assert caught.value.field == field
    assert _rows(sqlite_store, t.silences) == 0


def test_span_parses_site_local_times_iso_and_durations() -> None:
    now = local("2027-01-15 09:00")
    assert windows.span(now, AMS, duration="2h") == (now, now + 7200)
    start, end = windows.span(now, AMS, start="2027-01-16 02:00", end="2027-01-16T04:00:00+01:00")
    assert (start, end) == (local("2027-01-16 02:00"), local("2027-01-16 04:00"))
    with pytest.raises(windows.WindowError, match="either an end or a duration"):
        windows.span(now, AMS, end="2027-01-16 04:00", duration="1h")
    with pytest.raises(windows.WindowError, match="always end"):
        windows.span(now, AMS)
    with pytest.raises(windows.WindowError, match="is not a time") as caught:
        windows.span(now, AMS, start="tomorrow", duration="1h")
    assert caught.value.field == "starts_at"
    with pytest.raises(windows.WindowError, match="not a duration"):
        windows.span(now, AMS, duration="2 hours")


# ---------------------------------------------------------------------------- config windows


def _recurring(url: str, every: str) -> Settings:
    return settings_for(
        f"""timezone: Europe/Amsterdam
maintenance:
  - name: backups
    every: "{every}"
    components: [database]
""",
        url,
    )


@pytest.mark.parametrize(
    ("when", "muted"),
    [
        ("2026-06-07 03:00", True),  # Sunday, inside
        ("2026-06-07 02:00", True),  # the start is inside
        ("2026-06-07 01:59", False),
        ("2026-06-07 04:00", False),  # the end is not
        ("2026-06-07 04:30", False),
        ("2026-06-06 03:00", False),  # Saturday
        ("2027-01-17 03:00", True),  # a winter Sunday: local time, whatever the UTC offset
    ],
)
def test_recurring_sunday_window_in_amsterdam(sqlite_store: Store, when: str, muted: bool) -> None:
    settings = _recurring(sqlite_store.url, "sun 02:00-04:00")
    with sqlite_store.connect() as conn:
        reason = _mute(conn, settings, local(when), "db", "database")
    assert reason == ("maintenance:backups" if muted else None)


@pytest.mark.parametrize(
    ("when", "muted"),
    [
        ("2026-06-06 22:59", False),  # Saturday before
        ("2026-06-06 23:00", True),
        ("2026-06-06 23:59", True),
        ("2026-06-07 00:30", True),  # Sunday, after midnight: still Saturday's window
        ("2026-06-07 01:00", False),
        ("2026-06-07 23:30", False),  # Sunday night is not a Saturday
        ("2026-06-05 23:30", False),  # nor is Friday
    ],
)
def test_recurring_window_running_past_midnight(
    sqlite_store: Store, when: str, muted: bool
) -> None:
    settings = _recurring(sqlite_store.url, "sat 23:00-01:00")
    with sqlite_store.connect() as conn:
        reason = _mute(conn, settings, local(when), "db", "database")
    assert reason == ("maintenance:backups" if muted else None)


def test_recurring_window_mutes_only_its_components(sqlite_store: Store) -> None:
    settings = _recurring(sqlite_store.url, "sun 02:00-04:00")
    with sqlite_store.connect() as conn:
        assert _mute(conn, settings, local("2026-06-07 03:00"), "web", "web") is None


def test_next_occurrence_of_recurring_windows() -> None:
    settings = _recurring("sqlite:///unused.db", "sat 23:00-01:00")
    [window] = settings.maintenance
    # Wednesday: the next one is Saturday night, ending Sunday 01:00
    found = windows.next_occurrence(window, local("2026-06-03 12:00"), settings)
    assert found == (local("2026-06-06 23:00"), local("2026-06-07 01:00"))
    # during it: the running occurrence
    found = windows.next_occurrence(window, local("2026-06-07 00:30"), settings)
    assert found == (local("2026-06-06 23:00"), local("2026-06-07 01:00"))
    # just after it: a week later
    found = windows.next_occurrence(window, local("2026-06-07 01:00"), settings)
    assert found == (local("2026-06-13 23:00"), local("2026-06-14 01:00"))


# ---------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, FakeClock]]:
    """A config on a tmp SQLite store, and the CLI's clock at Friday 2026-06-05 10:00 local."""
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(
        f"""site: cli-test
store:
  url: sqlite:///{tmp_path / "nw.db"}
timezone: Europe/Amsterdam
maintenance:
  - name: sunday backups
    every: "sun 02:00-04:00"
    components: [database]
{PROBES}""",
        encoding="utf-8",
    )
    clock = FakeClock(local("2026-06-05 10:00"))
    monkeypatch.setattr(alerts_cli, "CLOCK", clock)
    monkeypatch.setenv("USER", "alice")
    yield config, clock


def _store_of(config: Path) -> Store:
    store = Store(f"sqlite:///{config.parent / 'nw.db'}")
    store.migrate()
    return store


def test_cli_maintenance_add_list_end(cli_env: tuple[Path, FakeClock]) -> None:
    config, clock = cli_env
    cfg = ["--config", str(config)]
    added = runner.invoke(
        maintenance_app,
        ["add", "MariaDB upgrade", "--duration", "2h", "--component", "database"]
        + ["--probe", "web", "--comment", "to 11.4", *cfg],
    )
    assert added.exit_code == 0, added.output
    assert "maintenance #1 'MariaDB upgrade' (active)" in added.output
    assert "2026-06-05 10:00 → 2026-06-05 12:00 Europe/Amsterdam" in added.output

    listed = runner.invoke(maintenance_app, ["list", "--json", *cfg])
    assert listed.exit_code == 0, listed.output
    rows = {(w["source"], w["name"]): w for w in json.loads(listed.output)}
    ours = rows[("store", "MariaDB upgrade")]
    assert ours["state"] == "active" and ours["created_by"] == "alice"
    assert ours["components"] == ["database"] and ours["probes"] == ["web"]
    sunday = rows[("config", "sunday backups")]
    assert sunday["state"] == "upcoming" and sunday["every"] == "sun 02:00-04:00"
    assert sunday["starts_at"] == "2026-06-07T00:00:00Z"  # Sunday 02:00 CEST

    table = runner.invoke(maintenance_app, ["list", *cfg])
    assert "#1" in table.output and "ACTIVE" in table.output
    assert "every sun 02:00-04:00 (next 2026-06-07 02:00 → 2026-06-07 04:00)" in table.output

    clock.advance(1800)
    ended = runner.invoke(maintenance_app, ["end", "1", *cfg])
    assert ended.exit_code == 0, ended.output
    assert "paging is live again" in ended.output
    store = _store_of(config)
    with store.connect() as conn:
        row = conn.execute(select(t.maintenance)).mappings().one()
    store.dispose()
    assert row["ended_early_at"] == clock.now()

    again = runner.invoke(maintenance_app, ["end", "1", *cfg])
    assert again.exit_code == 1 and "already ended" in again.stderr
    missing = runner.invoke(maintenance_app, ["end", "99", *cfg])
    assert missing.exit_code == 1 and "no maintenance window #99" in missing.stderr
    after = json.loads(runner.invoke(maintenance_app, ["list", "--json", *cfg]).output)
    assert [w["source"] for w in after] == ["config"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--start", "2026-06-06 03:00", "--until", "2026-06-06 02:00"],
            "--until: the end (2026-06-06 02:00 CEST) must be after the start "
            "(2026-06-06 03:00 CEST)",
        ),
        (
            ["--start", "2026-06-05 08:00", "--until", "2026-06-05 09:00"],
            "--until: the end (2026-06-05 09:00 CEST) is already in the past",
        ),
        (["--duration", "2h", "--until", "2026-06-06 02:00"], "--duration: give either"),
        ([], "--until: give an end or a --duration"),
        (["--duration", "soon"], "--duration: 'soon' is not a duration"),
        (["--start", "next week", "--duration", "1h"], "--start: 'next week' is not a time"),
        (["--duration", "1h", "--probe", "nope"], "--probe: no probe is named 'nope'"),
    ],
)
def test_cli_refuses_bad_windows_with_one_line_and_writes_nothing(
    cli_env: tuple[Path, FakeClock], args: list[str], message: str
) -> None:
    config, _ = cli_env
    result = runner.invoke(maintenance_app, ["add", "upgrade", *args, "--config", str(config)])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert "Traceback" not in result.output and result.stderr.count("\n") == 1
    assert _rows_in(config, t.maintenance) == 0


def test_cli_silence_add_list_expire(cli_env: tuple[Path, FakeClock]) -> None:
    config, clock = cli_env
    cfg = ["--config", str(config)]
    added = runner.invoke(
        silence_app, ["add", "--probe", "db", "--duration", "30m", "--actor", "bob", *cfg]
    )
    assert added.exit_code == 0, added.output
    assert "silence #1 probe:db (active) until 2026-06-05 10:30" in added.output
    [row] = json.loads(runner.invoke(silence_app, ["list", "--json", *cfg]).output)
    assert row["matcher"] == "probe:db" and row["created_by"] == "bob"
    assert row["remaining"] == "30m"

    store = _store_of(config)
    settings = settings_for(PROBES, store.url)
    with store.connect() as conn:
        assert _mute(conn, settings, clock.now(), "db", "database") == "silence:1"
    clock.advance(300)
    expired = runner.invoke(silence_app, ["expire", "1", *cfg])
    assert expired.exit_code == 0, expired.output
    with store.connect() as conn:
        assert _mute(conn, settings, clock.now(), "db", "database") is None
    store.dispose()
    assert "no silences" in runner.invoke(silence_app, ["list", *cfg]).output


def test_cli_silence_needs_exactly_one_matcher(cli_env: tuple[Path, FakeClock]) -> None:
    config, _ = cli_env
    for args in (["--duration", "1h"], ["--probe", "db", "--all", "--duration", "1h"]):
        result = runner.invoke(silence_app, ["add", *args, "--config", str(config)])
        assert result.exit_code == 1
        assert "exactly one of --probe, --component, --fingerprint or --all" in result.stderr
    assert _rows_in(config, t.silences) == 0


# ---------------------------------------------------------------------------- API


@pytest.fixture
def api(sqlite_store: Store, clock: FakeClock) -> Iterator[TestClient]:
    settings = settings_for("timezone: Europe/Amsterdam\n" + PROBES, sqlite_store.url)
    app, _ = alerts_app(settings, sqlite_store, clock)
    with TestClient(app) as client:
        yield client


def test_api_maintenance_add_list_end(api: TestClient, clock: FakeClock) -> None:
    created = api.post(
        "/api/v1/maintenance",
        json={"name": "kernel update", "duration": "90m", "components": ["web"]},
    )
    assert created.status_code == 201, created.text
    window = created.json()
    # the actor is the principal, and this router-only app has none (the real app needs one)
    assert window["state"] == "active" and window["created_by"] == "anonymous"
    assert [w["id"] for w in api.get("/api/v1/maintenance").json()] == [window["id"]]

    clock.advance(600)
    ended = api.post(f"/api/v1/maintenance/{window['id']}/end")
    assert ended.status_code == 200 and ended.json()["state"] == "ended"
    assert api.get("/api/v1/maintenance").json() == []
    assert len(api.get("/api/v1/maintenance?all=true").json()) == 1

    again = api.post(f"/api/v1/maintenance/{window['id']}/end")
    assert again.status_code == 409 and again.json()["field"] == "id"
    assert api.post("/api/v1/maintenance/42/end").status_code == 404


def test_api_upcoming_window_can_be_cancelled(api: TestClient) -> None:
    window = api.post(
        "/api/v1/maintenance",
        json={"name": "later", "starts_at": "2027-01-16 02:00", "ends_at": "2027-01-16 04:00"},
    ).json()
    assert window["state"] == "upcoming"
    assert window["starts_at"] == "2027-01-16T01:00:00Z"  # 02:00 CET, the site's timezone
    assert api.post(f"/api/v1/maintenance/{window['id']}/end").json()["state"] == "cancelled"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "starts_at": "2027-01-16 04:00", "ends_at": "2027-01-16 02:00"}, "ends_at"),
        ({"name": "x"}, "ends_at"),
        ({"name": "x", "duration": "forever"}, "duration"),
        ({"name": "x", "duration": "1h", "probes": ["nope"]}, "probes"),
        ({"name": "", "duration": "1h"}, "name"),
    ],
)
def test_api_refuses_bad_windows_naming_the_field(
    api: TestClient, sqlite_store: Store, body: dict[str, Any], field: str
) -> None:
    response = api.post("/api/v1/maintenance", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert _rows(sqlite_store, t.maintenance) == 0


def test_api_silence_add_list_expire(api: TestClient, clock: FakeClock) -> None:
    created = api.post("/api/v1/silences", json={"matcher": "component:web", "duration": "1h"})
    assert created.status_code == 201, created.text
    silence = created.json()
    assert [s["id"] for s in api.get("/api/v1/silences").json()] == [silence["id"]]
    clock.advance(60)
    expired = api.post(f"/api/v1/silences/{silence['id']}/expire")
    assert expired.status_code == 200 and expired.json()["state"] == "ended"
    assert api.get("/api/v1/silences").json() == []
    assert api.post("/api/v1/silences/99/expire").status_code == 404


def test_api_silence_needs_exactly_one_matcher(api: TestClient) -> None:
    response = api.post("/api/v1/silences", json={"probe": "db", "all": True, "duration": "1h"})
    assert response.status_code == 422 and response.json()["field"] == "matcher"
    response = api.post("/api/v1/silences", json={"probe": "nope", "duration": "1h"})
    assert response.status_code == 422 and response.json()["field"] == "probe"
