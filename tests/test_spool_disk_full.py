"""A full disk under the spool: refused with 503 + Retry-After, told by health, and recovered
from without a restart; what was acknowledged is stored once, what was refused never.

The fault is injected at the system-call seam (os.write / os.fsync on spool segment files fail
with ENOSPC), so no root is needed; one extra test fills a real 2 MB tmpfs and skips when it
cannot be mounted.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from nachtwacht.auth import ingest_keys
from nachtwacht.cli.main import app as cli
from nachtwacht.clock import FakeClock
from nachtwacht.spool.drain import Drainer
from nachtwacht.spool.log import SpoolError, SpoolLog
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.helpers import admin_token, settings_for
from tests.test_errors_fixtures import add_project, envelope, msg_event
from tests.test_nothing_lost import outage, pings

ENOSPC = "No space left on device"
TOKEN = "nightly-backup-token"
SITE = f"""
site: disk-full-test
probes:
  - name: nightly
    kind: heartbeat
    token: {TOKEN}
    period: 1h
"""


def _segment(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").endswith(".spool")
    except OSError:
        return False


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class FullDisk:
    """Writes to spool segment files fail with ENOSPC while `full`; everything else writes.

    `mode="write"`: a write puts down at most `room` more bytes, then the disk refuses (the
    short write a nearly full disk gives). `mode="fsync"`: the write goes through but its fsync
    fails (delayed allocation finding no room): whole, never acknowledged records are on disk.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, mode: str = "write") -> None:
        self.full = False
        self.mode = mode
        self.room = 0
        self.touched = 0  # writes and fsyncs that reached a segment file
        real_write, real_fsync = os.write, os.fsync

        def write(fd: int, data: Any) -> int:
            if not _segment(fd):
                return real_write(fd, data)
            self.touched += 1
            if self.full and self.mode == "write":
                if self.room <= 0:
                    raise _enospc()
                written = real_write(fd, bytes(data[: self.room]))
                self.room -= written
                return written
            return real_write(fd, data)

        def fsync(fd: int) -> None:
            if _segment(fd):
                self.touched += 1
                if self.full and self.mode == "fsync":
                    raise _enospc()
            real_fsync(fd)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "fsync", fsync)

    def fill(self, room: int = 0) -> None:
        self.full, self.room = True, room

    def free(self) -> None:
        self.full = False


# -- the log itself -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["write", "fsync"])
def test_a_refused_append_leaves_nothing_and_the_log_recovers_by_itself(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    disk = FullDisk(monkeypatch, mode)
    spool = SpoolLog(tmp_path / "spool", clock=clock)
    spool.append("k", b"one")
    acknowledged = spool.append("k", b"two")
    segment = tmp_path / "spool" / "0000000001.spool"
    disk.fill(room=7)
    with pytest.raises(SpoolError, match=f"cannot write: {ENOSPC} since") as refused:
        spool.append_many([("k", b"refused-a"), ("k", b"refused-b")])
    assert refused.value.retry_after > 0
    # the failed write is cut back to the last acknowledged byte at once
    assert segment.stat().st_size == acknowledged[1]
    assert spool.fault is not None and spool.fault["error"] == ENOSPC
    assert spool.fault["since"] == clock.now()
    # inside the back-off the disk is not tried at all
    tried = disk.touched
    with pytest.raises(SpoolError, match=ENOSPC):
        spool.append("k", b"refused-c")
    assert disk.touched == tried
    clock.advance(refused.value.retry_after)
    with pytest.raises(SpoolError, match=ENOSPC):  # still full: tried, refused, waits longer
        spool.append("k", b"refused-d")
    assert disk.touched > tried
    assert spool.fault["since"] == clock.now() - refused.value.retry_after
    disk.free()
    clock.advance(60)
    spool.append("k", b"three")  # no restart
    assert spool.fault is None
    assert [r.payload for r in spool.read(None)] == [b"one", b"two", b"three"]
    spool.close()
    reopened = SpoolLog(tmp_path / "spool", clock=clock)
    assert [r.payload for r in reopened.read(None)] == [b"one", b"two", b"three"]
    reopened.close()


async def test_group_commit_refuses_every_waiter_of_a_failed_batch(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FullDisk(monkeypatch, "write")
    spool = SpoolLog(tmp_path / "spool", clock=clock)
    await spool.put("k", b"before")
    disk.fill(room=40)  # room for the first record of the batch, and a bit of the second
    outcomes = await asyncio.gather(
        *(spool.put("k", f"batch {i}".encode()) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(o, SpoolError) for o in outcomes)
    disk.free()
    clock.advance(60)
    await spool.put("k", b"after")
    # a whole record of the refused batch is not replayed either: its sender was told no
    assert [r.payload for r in spool.read(None)] == [b"before", b"after"]


# -- over HTTP: ingestion, pings, alerts, /healthz, `status` --------------------------------


@pytest.fixture
def served(sqlite_store: Store, clock: FakeClock) -> Iterator[tuple[TestClient, Any]]:
    app = create_app(settings_for(SITE, sqlite_store.url), sqlite_store, clock, start_engine=False)
    with TestClient(app) as client:
        yield client, app.state.nw.runtime


def _messages(store: Store) -> list[str]:
    with store.connect() as conn:
        c = t.error_events.c
        return list(conn.execute(select(c.message).order_by(c.id)).scalars())


@pytest.mark.parametrize("mode", ["write", "fsync"])
def test_a_full_disk_answers_503_says_so_in_health_and_recovers_without_restart(
    served: tuple[TestClient, Any],
    sqlite_store: Store,
    tmp_path: Path,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    client, runtime = served
    project = add_project(sqlite_store)
    with sqlite_store.begin() as conn:
        errors_key = ingest_keys.create_ingest_key(
            conn, "jobs", "errors", clock.now(), actor="tests"
        )
        alerts_key = ingest_keys.create_ingest_key(
            conn, "ext", "alerts", clock.now(), actor="tests"
        )
    sentry = {
        "Content-Type": "application/x-sentry-envelope",
        "X-Sentry-Auth": f"Sentry sentry_key={project['public_key']}, sentry_version=7",
    }
    envelope_url = f"/api/{project['id']}/envelope/"
    json_auth = {"Authorization": f"Bearer {errors_key['key']}"}
    alert_auth = {"Authorization": f"Bearer {alerts_key['key']}"}
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(f"store:\n  url: {sqlite_store.url}\n" + SITE)

    def send_event(message: str) -> Any:
        return client.post(envelope_url, content=envelope(msg_event(message)), headers=sentry)

    def send_json(message: str) -> Any:
        body = {"project": "shop", "message": message}
        return client.post("/api/v1/errors/events", json=body, headers=json_auth)

    def send_alert(title: str) -> Any:
        return client.post("/api/v1/alerts", json={"title": title}, headers=alert_auth)

    # acknowledged before the disk fills: in the spool (events) or the store (ping, alert)
    assert send_event("before").status_code == 200
    assert send_json("json before").status_code == 200
    assert send_alert("before").status_code == 200
    assert client.post(f"/ping/{TOKEN}", content=b"p1").status_code == 200
    # the details of /healthz need a viewer
    viewer = {"Authorization": f"Bearer {admin_token(sqlite_store, clock.now(), role='viewer')}"}
    disk = FullDisk(monkeypatch, mode)
    disk.fill(room=10)
    refusals = [send_event("refused"), send_event("refused again"), send_json("json refused")]
    # the store still takes pings directly: a full spool disk does not stop those
    assert client.post(f"/ping/{TOKEN}", content=b"p2").status_code == 200
    health = client.get("/healthz", headers=viewer)
    with pytest.raises(RuntimeError, match=f"spool cannot write: {ENOSPC} since"):
        client.portal.call(runtime._check_spool, clock.now())
    status = CliRunner().invoke(cli, ["status", "--config", str(config)])
    with outage(runtime, tmp_path):  # now pings and alerts need the spool too
        refusals += [client.post(f"/ping/{TOKEN}", content=b"refused"), send_alert("refused")]
    for r in refusals:
        assert r.status_code == 503, r.text
        assert int(r.headers["Retry-After"]) >= 1
        assert ENOSPC in r.json()["detail"]
    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "degraded" and body["store"]["available"] is True
    assert body["spool"]["writable"] is False
    assert body["spool"]["write_error"] == ENOSPC
    assert body["spool"]["write_error_since"] == clock.now()
    assert f"spool cannot write: {ENOSPC} since 2027-01-15T08:00:00Z" in body["summary"]
    assert status.exit_code == 2, status.output
    assert f"spool cannot write: {ENOSPC} since 2027-01-15T08:00:00Z" in " ".join(
        status.output.split()
    )  # wrapped at 80 columns

    # room again: after the Retry-After the next request goes through, no restart
    disk.free()
    clock.advance(max(int(r.headers["Retry-After"]) for r in refusals))
    assert send_event("after").status_code == 200
    with outage(runtime, tmp_path):
        assert client.post(f"/ping/{TOKEN}", content=b"p3").status_code == 200
    runtime.drainer.drain_all()
    client.portal.call(runtime._check_spool, clock.now())  # healthy again: does not raise
    healed = client.get("/healthz", headers=viewer).json()
    assert healed["spool"]["writable"] is True and "cannot write" not in healed["summary"]
    assert _messages(sqlite_store) == ["before", "json before", "after"]
    assert [body for _, body in pings(sqlite_store)] == ["p1", "p2", "p3"]
    with sqlite_store.connect() as conn:
        titles = conn.execute(select(t.alerts.c.title).order_by(t.alerts.c.id)).scalars().all()
    assert titles == ["before"]
    assert runtime.drainer.drain_all() == 0 and runtime.drainer.dead == 0


# -- a real full filesystem -----------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs, unmounted afterwards; skips where mounting is not allowed."""
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    try:
        while True:  # the last partial block
            os.write(fd, b"\0")
    except OSError:
        pass
    finally:
        os.close(fd)


def test_a_real_full_tmpfs_is_survived(
    small_disk: Path, sqlite_store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    spool_cfg = f"spool:\n  dir: {small_disk / 'spool'}\n"
    app = create_app(
        settings_for(spool_cfg + SITE, sqlite_store.url), sqlite_store, clock, start_engine=False
    )
    project = add_project(sqlite_store)
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(f"store:\n  url: {sqlite_store.url}\n" + spool_cfg + SITE)
    sentry = {
        "Content-Type": "application/x-sentry-envelope",
        "X-Sentry-Auth": f"Sentry sentry_key={project['public_key']}, sentry_version=7",
    }
    url = f"/api/{project['id']}/envelope/"
    with TestClient(app) as client:
        runtime = app.state.nw.runtime
        assert client.post(url, content=envelope(msg_event("before")), headers=sentry).is_success
        client.portal.call(runtime._check_spool, clock.now())  # serve's state file exists
        _fill(small_disk / "filler")
        refused = client.post(url, content=envelope(msg_event("x" * 20_000)), headers=sentry)
        assert refused.status_code == 503 and "Retry-After" in refused.headers
        with pytest.raises(RuntimeError, match=f"spool cannot write: {ENOSPC}"):
            client.portal.call(runtime._check_spool, clock.now())
        # the state file could not be replaced on the full disk, but was rewritten in place
        status = CliRunner().invoke(cli, ["status", "--config", str(config)])
        assert status.exit_code == 2 and f"spool cannot write: {ENOSPC}" in " ".join(
            status.output.split()
        )
        (small_disk / "filler").unlink()
        clock.advance(int(refused.headers["Retry-After"]))
        assert client.post(url, content=envelope(msg_event("after")), headers=sentry).is_success
        runtime.drainer.drain_all()
        assert _messages(sqlite_store) == ["before", "after"]
    # what is left on disk opens cleanly: no torn or refused record in it
    spool = SpoolLog(small_disk / "spool", clock=clock)
    drainer = Drainer(spool, sqlite_store, clock)
    assert drainer.drain_all() == 0
    spool.close()
