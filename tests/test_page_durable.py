"""A confirmed failure is paged even if the process dies right after committing it.

The transition that can page is a `probe_flips` row committed with the probe's state; the
alert worker deletes it in the transaction that raises the alert. These tests kill the process
(or abandon a runtime, which is what a kill leaves behind) between the two commits and check
that the next start pages, with the shipped defaults apart from the probe itself:

- PostgreSQL, a real `nachtwacht serve`: another connection holds `LOCK TABLE alerts IN
  EXCLUSIVE MODE`, the probe's target goes down, the state commits, the alert insert waits,
  serve is killed with SIGKILL, the lock is released, serve restarts: the page arrives.
- SQLite, in process: the state is committed and the runtime is dropped before its worker
  ran; a new runtime pages.
- The store cut: the failure goes to the spool; a start that replays it and stops before its
  worker ran leaves the flip; the next start pages.
- Reconcile by level: a critical state with no flip and no alert (an older version, a
  hand-edited store) is paged at start; a recovered probe whose alert still fires is resolved.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import create_engine, delete, select, text

from nachtwacht.alerts.worker import Alerting
from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import parse_config
from nachtwacht.config.schema import Settings
from nachtwacht.engine.runtime import Runtime
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.conftest import PG_ADMIN, free_port
from tests.helpers import until
from tests.test_nothing_lost import outage
from tests.test_nothing_lost_proxy import pg_database

BIN = Path(sys.executable).parent / "nachtwacht"


class Receiver:
    """A real webhook receiver in this event loop; keeps every request's JSON."""

    def __init__(self) -> None:
        self.got: list[dict] = []
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def __aenter__(self) -> Receiver:
        async def hook(request: web.Request) -> web.Response:
            self.got.append(await request.json())
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hook", hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        # port 0: the OS picks a free one, read back, so no other process can take it between
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    def pages(self) -> list[dict]:
        return [m for m in self.got if m["kind"] == "emergency_alert"]


class Target:
    """A TCP port that answers (listening) or refuses (bound, not listening)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def up(self) -> None:
        self.sock.listen(16)

    def down(self) -> None:
        self.sock.close()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))

    def close(self) -> None:
        self.sock.close()


def site(url: str, hook_port: int, target_port: int, spool: Path, interval: str = "1h") -> str:
    return f"""
site: durable
store: {{url: "{url}"}}
spool: {{dir: {spool}}}
engine: {{startup_spread: 0.1s}}
people:
  contacts:
    - {{id: olga, name: Olga Oncall, roles: [oncall_engineer], email: olga@example.org}}
notify:
  channels:
    hook: {{kind: webhook, url: "http://127.0.0.1:{hook_port}/hook"}}
probes:
  - {{name: cache, kind: tcp, host: 127.0.0.1, port: {target_port}, interval: {interval},
     retries: 0, component: cache, severity: 1, description: "Redis answers"}}
"""


def counts(store: Store) -> dict[str, int]:
    with store.connect() as conn:
        return {
            name: len(conn.execute(select(table)).all())
            for name, table in (
                ("alerts", t.alerts),
                ("incidents", t.incidents),
                ("outbox", t.outbox),
                ("flips", t.probe_flips),
            )
        }


def probe_state(store: Store) -> str | None:
    with store.connect() as conn:
        state = conn.execute(select(t.probe_state.c.state)).scalar_one_or_none()
    return None if state is None else str(state)


def abandon(rt: Runtime) -> None:
    """What a kill -9 leaves: nothing of the runtime runs again; the OS drops its locks."""
    rt.spool.close()


# -- PostgreSQL: a real serve, killed while the alert insert waits for a lock ---------------


@pytest.mark.postgres
@pytest.mark.serial  # kill -9 and restart of a real serve
async def test_kill_9_while_the_alert_insert_waits_still_pages_after_restart(
    tmp_path: Path,
) -> None:
    target = Target()
    target.up()
    with pg_database() as name:
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
        store = Store(url)
        locker = create_engine(url)
        async with Receiver() as hooks:
            config = tmp_path / "nachtwacht.yaml"
            config.write_text(site(url, hooks.port, target.port, tmp_path / "spool", "1s"))
            port = free_port()
            logs: list[Path] = []

            def start() -> subprocess.Popen[bytes]:
                log = tmp_path / f"serve-{len(logs)}.log"
                logs.append(log)
                return subprocess.Popen(
                    [str(BIN), "serve", "--config", str(config), "--port", str(port)],
                    stdout=subprocess.DEVNULL,
                    stderr=log.open("wb"),
                    cwd=tmp_path,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )

            # before serve starts, not beside it: two migrations of one empty database at
            # once collide (one of them fails on a table the other just created)
            store.migrate()
            first = start()
            second: subprocess.Popen[bytes] | None = None
            lock = locker.connect()
            try:
                await until(lambda: probe_state(store) == "ok", "the probe checked ok", 60)
                held = lock.begin()
                lock.execute(text("LOCK TABLE alerts IN EXCLUSIVE MODE"))
                target.down()
                await until(lambda: probe_state(store) == "critical", "critical committed")
                # the worker has the flip and waits for the lock: kill it right there
                await until(lambda: waiting_on_lock(locker, name), "alert insert waiting")
                first.send_signal(signal.SIGKILL)
                first.wait(30)
                held.rollback()
                assert counts(store)["alerts"] == 0 and counts(store)["outbox"] == 0
                assert counts(store)["flips"] == 1  # the obligation survived the kill
                second = start()
                try:
                    await until(lambda: len(hooks.pages()) >= 1, "the page after the restart", 60)
                except AssertionError as exc:
                    # what the restarted server was doing, to tell a slow start from a lost page
                    tail = logs[-1].read_text(errors="replace")[-4000:]
                    raise AssertionError(f"{exc}\n--- {logs[-1].name} ---\n{tail}") from None
            finally:
                lock.close()
                for proc in (first, second):
                    if proc is not None and proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            proc.wait(30)
                        if proc.poll() is None:
                            proc.kill()
                locker.dispose()
            page = hooks.pages()[0]
            assert page["payload"]["severity"] == 1 and page["payload"]["component"] == "cache"
            assert page["payload"]["title"].startswith("cache: cache CRITICAL")
            assert counts(store) == {"alerts": 1, "incidents": 1, "outbox": 1, "flips": 0}
            store.dispose()
    target.close()


def waiting_on_lock(engine: object, database: str) -> bool:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        return (
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = :db "
                    "AND wait_event_type = 'Lock' AND query ILIKE '%alerts%'"
                ),
                {"db": database},
            ).scalar_one()
            > 0
        )


# -- SQLite: the state committed, the process gone before its alert --------------------------


def _settings(tmp_path: Path, hook_port: int, target_port: int, url: str = "") -> Settings:
    url = url or f"sqlite:///{tmp_path / 'nw.db'}"
    return parse_config(
        site(url, hook_port, target_port, tmp_path / "spool"), str(tmp_path / "nachtwacht.yaml")
    )


async def _confirm_failure(rt: Runtime) -> None:
    """One failing check, its state committed; the alert worker never ran."""
    await rt.scheduler.run_now(["cache"])
    await rt.writer.flush()


async def test_a_state_committed_without_its_alert_is_paged_at_the_next_start(
    tmp_path: Path,
) -> None:
    target = Target()  # bound, not listening: refused
    async with Receiver() as hooks:
        settings = _settings(tmp_path, hooks.port, target.port)
        store = Store(settings.store.url)
        first = Runtime.build(settings, store)
        await _confirm_failure(first)
        assert probe_state(store) == "critical"
        assert counts(store) == {"alerts": 0, "incidents": 0, "outbox": 0, "flips": 1}
        abandon(first)

        second = Runtime.build(settings, store)
        second.start()
        try:
            await until(lambda: len(hooks.pages()) == 1, "the page after the restart")
        finally:
            await second.stop()
        page = hooks.pages()[0]
        assert page["payload"]["title"] == "cache: cache CRITICAL — " + last_message(store)
        assert counts(store) == {"alerts": 1, "incidents": 1, "outbox": 1, "flips": 0}
        store.dispose()
    target.close()


def last_message(store: Store) -> str:
    with store.connect() as conn:
        return str(conn.execute(select(t.probe_state.c.last_message)).scalar_one())


async def test_a_failure_replayed_from_the_spool_pages_even_if_that_start_stops_at_once(
    tmp_path: Path,
) -> None:
    target = Target()
    async with Receiver() as hooks:
        settings = _settings(tmp_path, hooks.port, target.port)
        store = Store(settings.store.url)
        clock = FakeClock(time.time())

        cut = Runtime.build(settings, store, clock)
        with outage(cut, tmp_path):
            await _confirm_failure(cut)
        assert cut.writer.spilled == 1 and probe_state(store) == "new"  # only in the spool
        abandon(cut)

        # the store is back: this start replays the spool, then is stopped before its worker
        replay = Runtime.build(settings, store, clock)
        replay.drainer.drain_all()
        assert probe_state(store) == "critical"
        assert counts(store)["alerts"] == 0 and counts(store)["flips"] == 1
        abandon(replay)

        last = Runtime.build(settings, store)
        last.start()
        try:
            await until(lambda: len(hooks.pages()) == 1, "the page after the replay")
        finally:
            await last.stop()
        assert counts(store)["flips"] == 0
        store.dispose()
    target.close()


async def test_reconcile_pages_a_failing_probe_that_has_no_flip_and_no_alert(
    tmp_path: Path,
) -> None:
    target = Target()
    async with Receiver() as hooks:
        settings = _settings(tmp_path, hooks.port, target.port)
        store = Store(settings.store.url)
        first = Runtime.build(settings, store)
        await _confirm_failure(first)
        abandon(first)
        with store.begin() as conn:  # as an older version would have left it
            conn.execute(delete(t.probe_flips))

        second = Runtime.build(settings, store)
        second.start()
        try:
            await until(lambda: len(hooks.pages()) == 1, "the page from reconciling")
        finally:
            await second.stop()
        assert second.alerting.reconciled == 1
        with store.connect() as conn:
            alert = conn.execute(select(t.alerts)).mappings().one()
        assert alert["status"] == "firing" and alert["fingerprint"] == "probe:cache"
        store.dispose()
    target.close()


async def test_reconcile_resolves_the_alert_of_a_probe_that_recovered_unseen(
    tmp_path: Path,
) -> None:
    target = Target()
    async with Receiver() as hooks:
        settings = _settings(tmp_path, hooks.port, target.port)
        store = Store(settings.store.url)
        first = Runtime.build(settings, store)
        await _confirm_failure(first)
        await first.alerting.drain()
        assert counts(store)["alerts"] == 1
        abandon(first)
        with store.begin() as conn:  # recovered, its flip lost (as an older version lost it)
            conn.execute(t.probe_state.update().values(state="ok", last_message="connected"))
        target.up()  # and it stays up

        second = Runtime.build(settings, store)
        second.start()
        try:
            await until(lambda: second.alerting.reconciled == 1, "the reconcile")
        finally:
            await second.stop()
        with store.connect() as conn:
            alert = conn.execute(select(t.alerts)).mappings().one()
            incident = conn.execute(select(t.incidents)).mappings().one()
        assert alert["status"] == "resolved" and incident["status"] == "resolved"
        store.dispose()
    target.close()


async def test_two_workers_handle_one_flip_once(tmp_path: Path, store: Store) -> None:
    """On each backend: the second worker's DELETE waits for the first, then finds nothing."""
    target = Target()
    async with Receiver() as hooks:
        url = store.engine.url.render_as_string(hide_password=False)
        settings = _settings(tmp_path, hooks.port, target.port, url)
        rt = Runtime.build(settings, store)
        await _confirm_failure(rt)
        # another worker on the same store (as another process would be)
        other = Alerting(settings, store, rt.clock, rt.sender, rt.scheduler)
        # both see the same flip; only the one whose DELETE finds it raises the alert
        results = await asyncio.gather(
            asyncio.to_thread(rt.alerting.handle_flips),
            asyncio.to_thread(other.handle_flips),
        )
        assert sorted(results) == [0, 1]
        assert rt.alerting.processed + other.processed == 1
        assert counts(store) == {"alerts": 1, "incidents": 1, "outbox": 1, "flips": 0}
        abandon(rt)
    target.close()


async def test_the_store_down_page_names_the_probes_failing_at_that_moment(
    tmp_path: Path,
) -> None:
    target = Target()
    settings = _settings(tmp_path, free_port(), target.port)
    store = Store(settings.store.url)
    rt = Runtime.build(settings, store)
    await rt.scheduler.run_now(["cache"])  # critical in memory; the store may be gone
    alarm = rt.watchdog.store_alarm  # type: ignore[attr-defined]
    now = rt.clock.now()
    text = alarm._page_text({"since": now - 120, "error": "connection refused"}, now)
    message = rt.scheduler.by_name["cache"].state.last_message
    assert f"Probes failing at this moment (1):\n- cache: cache CRITICAL — {message}\n" in text
    abandon(rt)
    store.dispose()
    target.close()
