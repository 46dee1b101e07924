"""The restore test: the newest backup restored into a scratch store and checked. A good backup
passes; a corrupted one (a flipped byte, a truncated file) fails and raises the alert
`restore-test:<backend>` through the alert pipeline, which the next passing test resolves.
The result shows on the overview and in the monthly report; the schedule claims each period
once."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from nachtwacht.alerts.service import open_alert
from nachtwacht.backup import restoretest, service
from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import parse_config
from nachtwacht.config.schema import Settings
from nachtwacht.incidents import service as incidents
from nachtwacht.reviews import monthly
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.auth_helpers import add_user, fast_hashing, login  # noqa: F401 - fixture

DAY = 86400.0


def config(store: Store, tmp_path: Path) -> Settings:
    return parse_config(
        f"store: {{url: '{store.url}'}}\nbackup: {{dir: '{tmp_path / 'backups'}', interval: 6h}}\n",
        "test.yaml",
    )


def with_incident(store: Store, settings: Settings, now: float) -> int:
    with store.begin() as conn:
        inc = incidents.open_incident(conn, settings, title="Site down", severity=1, now=now)
        incidents.add_event(conn, inc, now + 60, "note", "alice", "restarted nginx", {"a": 1})
        return inc


def backup(store: Store, settings: Settings, now: float) -> service.BackupInfo:
    return service.create_backup(store, service.backup_dir(settings), now)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def alert(store: Store) -> dict | None:
    with store.connect() as conn:
        return open_alert(conn, "restore-test:sqlite")


def test_a_good_backup_passes_and_is_recorded(sqlite_store: Store, tmp_path: Path) -> None:
    clock = FakeClock()
    settings = config(sqlite_store, tmp_path)
    with_incident(sqlite_store, settings, clock.now())
    info = backup(sqlite_store, settings, clock.now())
    result = restoretest.run(settings, sqlite_store, clock, trigger="scheduled")
    assert result["ok"], result["problems"]
    assert result["backup"] == info.name
    assert result["incidents"] == 1 and result["events"] >= 2
    assert info.manifest is not None and result["rows"] == info.manifest.total_rows
    assert alert(sqlite_store) is None
    assert list(settings.data_dir.glob(".restore-test-*")) == []  # the scratch store is gone
    with sqlite_store.connect() as conn:
        shown = restoretest.status(conn, settings, clock.now())
        assert shown["state"] == "passed" and shown["last"]["backup"] == info.name
        report = monthly.report(conn, settings, None, clock.now())
    assert report["restore_tests"]["count"] == 1 and report["restore_tests"]["passed"] == 1
    assert monthly.restore_line(report["restore_tests"]).startswith(
        "restore tests: 1 of 1 passed; last passed: backup nachtwacht-"
    )


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_corrupted_backup_fails_alerts_and_the_next_good_one_resolves(
    sqlite_store: Store, tmp_path: Path, damage: str
) -> None:
    clock = FakeClock()
    settings = config(sqlite_store, tmp_path)
    with_incident(sqlite_store, settings, clock.now())
    bad = backup(sqlite_store, settings, clock.now())
    data = bad.path / "nachtwacht.db"
    if damage == "flip":
        flip_byte(data)
    else:
        with data.open("r+b") as fh:
            fh.truncate(data.stat().st_size // 2)
    result = restoretest.run(settings, sqlite_store, clock)
    assert not result["ok"] and result["problems"]
    assert "FAILED" in result["summary"]
    firing = alert(sqlite_store)
    assert firing is not None and firing["status"] == "firing"
    assert firing["incident_id"] is not None  # through the pipeline: an incident, pages
    with sqlite_store.connect() as conn:
        assert restoretest.status(conn, settings, clock.now())["state"] == "failed"
    clock.advance(DAY)
    backup(sqlite_store, settings, clock.now())  # the newest is a good one again
    assert restoretest.run(settings, sqlite_store, clock)["ok"]
    assert alert(sqlite_store) is None
    with sqlite_store.connect() as conn:
        report = monthly.report(conn, settings, None, clock.now())
    assert report["restore_tests"]["count"] == 2 and report["restore_tests"]["passed"] == 1


def test_no_backup_to_test_fails_with_the_reason(sqlite_store: Store, tmp_path: Path) -> None:
    settings = config(sqlite_store, tmp_path)
    result = restoretest.run(settings, sqlite_store, FakeClock())
    assert not result["ok"] and "no backup in" in result["problems"][0]


def test_the_schedule_claims_each_period_once(sqlite_store: Store, tmp_path: Path) -> None:
    clock = FakeClock()
    settings = config(sqlite_store, tmp_path)
    with sqlite_store.begin() as conn:
        assert not restoretest.claim_due(conn, settings, clock.now())  # nothing to test yet
    backup(sqlite_store, settings, clock.now())
    with sqlite_store.begin() as conn:
        assert restoretest.claim_due(conn, settings, clock.now())
        assert not restoretest.claim_due(conn, settings, clock.now() + 60)  # claimed
    restoretest.run(settings, sqlite_store, clock, trigger="scheduled")
    clock.advance(29 * DAY)
    with sqlite_store.begin() as conn:
        assert not restoretest.claim_due(conn, settings, clock.now())  # monthly by default
    clock.advance(2 * DAY)
    with sqlite_store.begin() as conn:
        assert restoretest.claim_due(conn, settings, clock.now())


def test_the_command_tests_the_newest_or_a_named_backup(
    sqlite_store: Store, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from nachtwacht.cli.main import app

    cfg = tmp_path / "nachtwacht.yaml"
    cfg.write_text(
        f"store: {{url: '{sqlite_store.url}'}}\nbackup: {{dir: '{tmp_path / 'backups'}'}}\n"
    )
    settings = config(sqlite_store, tmp_path)
    runner = CliRunner()
    none = runner.invoke(app, ["backup", "test-restore", "--config", str(cfg)])
    assert none.exit_code == 2 and "no backup in" in none.output
    info = backup(sqlite_store, settings, 1_800_000_000.0)
    done = runner.invoke(app, ["backup", "test-restore", "--config", str(cfg)])
    assert done.exit_code == 0, done.output
    assert done.output.startswith(f"ok: backup {info.name} restored into a scratch SQLite store")
    named = runner.invoke(app, ["backup", "test-restore", str(info.path), "--config", str(cfg)])
    assert named.exit_code == 0, named.output
    typo = runner.invoke(app, ["backup", "test-restore", "nachtwacht-x", "--config", str(cfg)])
    assert typo.exit_code == 2 and "no backup 'nachtwacht-x'" in typo.output
    with sqlite_store.connect() as conn:  # refused input recorded nothing
        assert conn.execute(select(func.count()).select_from(t.restore_tests)).scalar_one() == 2


def test_the_overview_shows_the_restore_test(
    sqlite_store: Store,
    tmp_path: Path,
    fast_hashing: None,  # noqa: F811
) -> None:
    from fastapi.testclient import TestClient

    from nachtwacht.web.app import create_app

    clock = FakeClock()
    settings = config(sqlite_store, tmp_path)
    bad = backup(sqlite_store, settings, clock.now())
    flip_byte(bad.path / "nachtwacht.db")
    restoretest.run(settings, sqlite_store, clock)
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    with TestClient(app) as client:
        add_user(sqlite_store, clock, "vic", "viewer")
        login(client, "vic")
        page = client.get("/")
    assert page.status_code == 200
    assert 'data-restore-test="failed"' in page.text and "FAILED the restore test" in page.text


def test_the_api_runs_a_test_for_admins_and_lists_them_for_viewers(
    sqlite_store: Store, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from nachtwacht.web.app import create_app
    from tests.helpers import admin_token

    clock = FakeClock()
    settings = config(sqlite_store, tmp_path)
    admin = {"Authorization": f"Bearer {admin_token(sqlite_store, clock.now())}"}
    viewer = {"Authorization": f"Bearer {admin_token(sqlite_store, clock.now(), 'viewer')}"}
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    with TestClient(app) as client:
        assert client.get("/api/v1/restore-tests", headers=viewer).json()["state"] == "overdue"
        none = client.post("/api/v1/backups/test-restore", headers=admin)
        assert none.status_code == 409
        backup(sqlite_store, settings, clock.now())
        assert client.post("/api/v1/backups/test-restore", headers=viewer).status_code == 403
        done = client.post("/api/v1/backups/test-restore", headers=admin)
        assert done.status_code == 200 and done.json()["ok"] is True
        listed = client.get("/api/v1/restore-tests", headers=viewer).json()
    assert listed["state"] == "passed" and [x["ok"] for x in listed["tests"]] == [True]


async def test_the_engine_tests_the_newest_backup_monthly(
    sqlite_store: Store, tmp_path: Path
) -> None:
    from nachtwacht.engine.runtime import Runtime

    clock = FakeClock()
    settings = config(sqlite_store, tmp_path)
    runtime = Runtime.build(settings, sqlite_store, clock)
    assert await runtime.engine.tick_once("backup")  # the first scheduled backup
    assert await runtime.engine.tick_once("restore-test")
    clock.advance(DAY)
    assert await runtime.engine.tick_once("restore-test")  # not due again for a month
    with sqlite_store.connect() as conn:
        [test] = restoretest.recent(conn, 10)
    assert test["ok"] and test["trigger"] == "scheduled"
    await runtime.stop()


def test_a_backup_of_every_backend_restores_into_the_scratch_store(
    store: Store, tmp_path: Path
) -> None:
    """PostgreSQL and MariaDB backups are logical dumps: they too pass into scratch SQLite."""
    clock = FakeClock()
    settings = config(store, tmp_path)
    with_incident(store, settings, clock.now())
    backup(store, settings, clock.now())
    result = restoretest.run(settings, store, clock)
    assert result["ok"], result["problems"]
    assert result["incidents"] == 1
    with store.connect() as conn:
        assert open_alert(conn, restoretest.fingerprint(store)) is None


def test_a_full_disk_during_the_restore_fails_the_test_and_raises_the_alert(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault: the scratch store's disk fills up mid-restore (SQLite's own SQLITE_FULL)."""
    from sqlalchemy import event

    clock = FakeClock()
    settings = config(sqlite_store, tmp_path)
    with_incident(sqlite_store, settings, clock.now())
    backup(sqlite_store, settings, clock.now())
    real = restoretest.restore_backup

    def on_a_full_disk(path: Path, scratch: Store) -> object:
        def tiny(dbapi: object, _record: object) -> None:
            dbapi.execute("PRAGMA max_page_count = 40")  # type: ignore[attr-defined]

        event.listen(scratch.engine, "connect", tiny)
        return real(path, scratch)

    monkeypatch.setattr(restoretest, "restore_backup", on_a_full_disk)
    result = restoretest.run(settings, sqlite_store, clock, trigger="scheduled")
    assert not result["ok"] and "full" in result["problems"][0], result["problems"]
    firing = alert(sqlite_store)
    assert firing is not None and firing["status"] == "firing"
    assert list(settings.data_dir.glob(".restore-test-*")) == []


def test_no_room_for_the_scratch_store_fails_the_test_and_raises_the_alert(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    clock = FakeClock()
    settings = config(sqlite_store, tmp_path)
    backup(sqlite_store, settings, clock.now())

    def no_space(*_args: object, **_kwargs: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(restoretest.tempfile, "mkdtemp", no_space)
    result = restoretest.run(settings, sqlite_store, clock, trigger="scheduled")
    assert not result["ok"] and "No space left" in result["problems"][0]
    assert alert(sqlite_store) is not None


def test_a_scheduled_test_claimed_by_a_process_that_died_is_claimed_again(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """Fault: the engine claims the period's test, commits, and is killed before the test."""
    clock = FakeClock()
    settings = config(sqlite_store, tmp_path)
    backup(sqlite_store, settings, clock.now())
    with sqlite_store.begin() as conn:
        assert restoretest.claim_due(conn, settings, clock.now())
    # ... killed here: no test recorded
    clock.advance(3600.0)
    with sqlite_store.begin() as conn:
        assert not restoretest.claim_due(conn, settings, clock.now())  # may still be running
    clock.advance(restoretest.CLAIM_LEASE)
    with sqlite_store.begin() as conn:
        assert restoretest.claim_due(conn, settings, clock.now())  # taken again
        assert not restoretest.claim_due(conn, settings, clock.now())  # by one engine only
    restoretest.run(settings, sqlite_store, clock, trigger="scheduled")
    clock.advance(restoretest.CLAIM_LEASE + 60)
    with sqlite_store.begin() as conn:
        assert not restoretest.claim_due(conn, settings, clock.now())  # done for the period


def test_an_older_backup_that_restores_does_not_resolve_the_newest_ones_alert(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """Fault: the newest backup is corrupt; someone tests an older, good one by name."""
    clock = FakeClock()
    settings = config(sqlite_store, tmp_path)
    with_incident(sqlite_store, settings, clock.now())
    good = backup(sqlite_store, settings, clock.now())
    clock.advance(DAY)
    bad = backup(sqlite_store, settings, clock.now())
    flip_byte(bad.path / "nachtwacht.db")
    assert not restoretest.run(settings, sqlite_store, clock, trigger="scheduled")["ok"]
    clock.advance(60)
    assert restoretest.run(settings, sqlite_store, clock, good.name)["ok"]
    firing = alert(sqlite_store)
    assert firing is not None and firing["status"] == "firing"  # the newest still does not
    clock.advance(60)
    assert restoretest.run(settings, sqlite_store, clock, bad.name)["ok"] is False
    backup(sqlite_store, settings, clock.now() + 60)
    clock.advance(120)
    assert restoretest.run(settings, sqlite_store, clock)["ok"]
    assert alert(sqlite_store) is None  # the newest restores again
