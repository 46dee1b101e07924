"""Scheduled backups in a real runtime with a FakeClock: interval, retention, heartbeat pings."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from sqlalchemy import select

from nachtwacht.backup import service
from nachtwacht.backup.schedule import ScheduledBackups
from nachtwacht.clock import FakeClock
from nachtwacht.config.schema import Settings
from nachtwacht.engine.runtime import Runtime
from nachtwacht.probes.heartbeats import last_events
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.helpers import settings_for
from tests.test_backup_fill import fill

TOKEN = "nightly-backup-7f3a"
HOUR = 3600.0


def _settings(store: Store, directory: Path, interval: str = "1h", keep: int = 2) -> Settings:
    return settings_for(
        f"""
backup:
  dir: {directory}
  interval: {interval}
  keep: {keep}
  heartbeat: {TOKEN}
probes:
  - name: backups
    kind: heartbeat
    token: {TOKEN}
    period: 1h
""",
        store.url,
    )


def _pings(store: Store) -> list[tuple[str, float]]:
    c = t.heartbeat_pings.c
    with store.connect() as conn:
        rows = conn.execute(select(c.event, c.ts).where(c.token == TOKEN).order_by(c.id)).all()
    return [(r.event, r.ts) for r in rows]


def _names(directory: Path) -> list[str]:
    return [b.name for b in service.list_backups(directory)]


async def test_backups_run_at_the_interval_keep_n_and_ping_the_heartbeat(
    store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    directory = tmp_path / "backups"
    runtime = Runtime.build(_settings(store, directory), store, clock)
    module = runtime.engine.modules["backup"]
    assert module.interval == 60.0  # looks every minute whether a backup is due
    start = clock.now()

    assert await runtime.engine.tick_once("backup")
    assert _names(directory) == ["nachtwacht-20270115T080000Z"]
    assert _pings(store) == [("success", start)]

    for step in (60.0, 30 * 60.0, 28 * 60.0):  # 59 minutes: not yet an hour
        clock.advance(step)
        assert await runtime.engine.tick_once("backup")
    assert len(_names(directory)) == 1 and len(_pings(store)) == 1

    clock.advance(60.0)  # an hour after the first
    assert await runtime.engine.tick_once("backup")
    assert _names(directory) == ["nachtwacht-20270115T090000Z", "nachtwacht-20270115T080000Z"]

    clock.advance(HOUR)
    assert await runtime.engine.tick_once("backup")
    # keep: 2 — the oldest is gone
    assert _names(directory) == ["nachtwacht-20270115T100000Z", "nachtwacht-20270115T090000Z"]
    assert _pings(store) == [
        ("success", start),
        ("success", start + HOUR),
        ("success", start + 2 * HOUR),
    ]
    with store.connect() as conn:
        assert last_events(conn, TOKEN) == {"success": start + 2 * HOUR}
    # each backup holds the pings committed before it: the third one has the first two
    newest = service.list_backups(directory)[0].manifest
    assert newest is not None and newest.tables["heartbeat_pings"]["rows"] == 2


async def test_a_failed_backup_pings_fail_marks_the_module_unhealthy_and_retries(
    store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    directory = tmp_path / "backups"
    directory.write_text("a file where the backup directory should be")
    runtime = Runtime.build(_settings(store, directory, interval="6h"), store, clock)
    assert not await runtime.engine.tick_once("backup")
    health = runtime.engine.modules["backup"].health
    assert health.consecutive_errors == 1
    assert "cannot write to the backup directory" in (health.last_error or "")
    assert [e for e, _ in _pings(store)] == ["fail"]

    directory.unlink()
    clock.advance(5 * 60.0)  # not retried at once
    assert await runtime.engine.tick_once("backup")
    assert _names(directory) == []
    clock.advance(5 * 60.0)  # ten minutes after the failure, not six hours
    assert await runtime.engine.tick_once("backup")
    assert len(_names(directory)) == 1
    assert [e for e, _ in _pings(store)] == ["fail", "success"]
    assert runtime.engine.modules["backup"].health.consecutive_errors == 0


async def test_a_restart_does_not_back_up_again_before_the_interval(
    sqlite_store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    directory = tmp_path / "backups"
    settings = _settings(sqlite_store, directory, interval="6h")
    first = ScheduledBackups(settings, sqlite_store, clock)
    assert first.run_once(clock.now()) is not None
    clock.advance(HOUR)
    restarted = ScheduledBackups(settings, sqlite_store, clock)
    assert restarted.run_once(clock.now()) is None  # the newest backup is an hour old
    clock.advance(5 * HOUR)
    assert restarted.run_once(clock.now()) is not None
    assert len(_names(directory)) == 2


async def test_no_module_without_an_interval(sqlite_store: Store, clock: FakeClock) -> None:
    settings = settings_for("probes: []\n", sqlite_store.url)
    assert settings.backup.interval == 0
    runtime = Runtime.build(settings, sqlite_store, clock)
    assert "backup" not in runtime.engine.modules
    assert service.backup_dir(settings) == settings.data_dir / "backups"


async def test_the_backup_runs_off_the_event_loop(
    sqlite_store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    fill(sqlite_store)  # enough rows that the backup takes a while
    runtime = Runtime.build(_settings(sqlite_store, tmp_path / "backups"), sqlite_store, clock)
    finished = asyncio.Event()
    turns = 0

    async def spin() -> None:
        nonlocal turns
        while not finished.is_set():
            turns += 1
            await asyncio.sleep(0)

    spinner = asyncio.create_task(spin())
    await asyncio.sleep(0)
    assert await runtime.engine.tick_once("backup")
    turns_during_backup = turns
    finished.set()
    await spinner
    assert len(_names(tmp_path / "backups")) == 1
    # the loop kept turning while the backup ran in its worker thread
    assert turns_during_backup > 10


def test_list_shows_a_damaged_backup_and_prune_keeps_the_newest(tmp_path: Path) -> None:
    directory = tmp_path / "backups"
    store = Store(f"sqlite:///{tmp_path / 'nw.db'}")
    store.migrate()
    for i in range(3):
        service.create_backup(store, directory, 1_800_000_000.0 + i * HOUR)
    newest = directory / "nachtwacht-20270115T100000Z"
    (newest / "manifest.json").write_text("{}")
    stale = directory / "nachtwacht-20270101T000000Z.partial"
    stale.mkdir()
    os.utime(stale, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    fresh = directory / "nachtwacht-20270116T000000Z.partial"
    fresh.mkdir()
    (directory / "my-notes").mkdir()  # not a backup: never touched

    listed = service.list_backups(directory)
    assert [b.name for b in listed] == [
        "nachtwacht-20270115T100000Z",
        "nachtwacht-20270115T090000Z",
        "nachtwacht-20270115T080000Z",
    ]
    assert listed[0].manifest is None and "the manifest was changed" in (listed[0].error or "")

    # the damaged one neither counts nor goes: two good ones stay
    assert service.prune(directory, keep=2) == [stale.name]
    assert service.prune(directory, keep=1) == ["nachtwacht-20270115T080000Z"]
    assert sorted(p.name for p in directory.iterdir()) == [
        "my-notes",
        "nachtwacht-20270115T090000Z",
        "nachtwacht-20270115T100000Z",
        fresh.name,
    ]
