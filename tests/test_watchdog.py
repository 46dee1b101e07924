"""Who watches the watchman: the dead man's switch, and the store-down S1 page sent directly.

Real parts: a local HTTP receiver (aiohttp) and SMTP server (aiosmtpd), PostgreSQL reached
through a TCP proxy that the test cuts (test_nothing_lost_proxy.TcpProxy), time from FakeClock.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from email import message_from_bytes
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from nachtwacht.clock import FakeClock
from nachtwacht.engine.runtime import Runtime
from nachtwacht.incidents.service import timeline
from nachtwacht.oncall.service import add_override
from nachtwacht.spool.drain import Drainer
from nachtwacht.spool.log import SpoolLog
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.watchdog.deadman import DeadMan
from nachtwacht.watchdog.models import WatchdogSettings
from nachtwacht.watchdog.storealarm import FINGERPRINT, StoreAlarm
from nachtwacht.web.app import create_app
from tests.conftest import free_port
from tests.helpers import admin_token, settings_for
from tests.notify_helpers import Mailbox, Receiver, smtp_server
from tests.test_nothing_lost_pg import Served
from tests.test_nothing_lost_proxy import TcpProxy, pg_database, proxied_url


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
def mailbox() -> Iterator[tuple[int, Mailbox]]:
    controller, box = smtp_server()
    yield controller.port, box
    controller.stop()


# -- dead man's switch -----------------------------------------------------------------------


def _deadman(url: str, clock: FakeClock, method: str = "POST") -> DeadMan:
    cfg = WatchdogSettings.model_validate({"deadman_url": url, "deadman_method": method})
    return DeadMan(cfg, "site-a", clock, lambda: {"status": "ok", "store": "up"})


async def test_the_dead_man_switch_posts_its_status_and_says_when_it_cannot(
    receiver: Receiver, clock: FakeClock
) -> None:
    deadman = _deadman(f"{receiver.url}/ping/secret-token-123", clock)
    await deadman.tick(clock.now())
    clock.advance(60)
    await deadman.tick(clock.now())
    assert [s.path for s in receiver.seen] == ["/ping/secret-token-123"] * 2
    body = receiver.seen[-1].json
    assert body["status"] == "ok" and body["site"] == "site-a" and body["store"] == "up"
    assert body["at"].startswith("2027-01-15T08:")  # the clock's time, not the wall's
    assert deadman.sent == 2 and deadman.snapshot()["last_error"] is None
    await receiver.stop()
    clock.advance(60)
    with pytest.raises(RuntimeError, match="not delivered"):
        await deadman.tick(clock.now())
    snap = deadman.snapshot()
    assert snap["failed"] == 1 and "connection" in snap["last_error"].lower()
    assert "secret-token" not in snap["last_error"]  # the URL's path is its secret


async def test_the_dead_man_switch_can_use_get_with_the_status_in_the_query(
    receiver: Receiver, clock: FakeClock
) -> None:
    await _deadman(f"{receiver.url}/hb", clock, "GET").tick(clock.now())
    assert receiver.seen[0].method == "GET" and receiver.seen[0].query == {"status": "ok"}


async def test_serve_pings_the_dead_man_switch_and_shows_a_failure_in_health(
    receiver: Receiver, clock: FakeClock, sqlite_store: Store
) -> None:
    settings = settings_for(
        f"watchdog:\n  deadman_url: {receiver.url}/ping/abc\n  deadman_interval: 30s\n",
        sqlite_store.url,
    )
    runtime = Runtime.build(settings, sqlite_store, clock)
    try:
        assert runtime.engine.modules["deadman"].interval == 30
        assert await runtime.engine.tick_once("deadman")
        body = receiver.seen[0].json
        assert body["store"] == "up" and body["spool_backlog_bytes"] == 0
        assert body["status"] == "ok" and body["unhealthy"] == []
        await receiver.stop()
        clock.advance(30)
        assert not await runtime.engine.tick_once("deadman")
        [health] = [m for m in runtime.engine.health() if m["module"] == "deadman"]
        assert health["healthy"] is False and "dead man's switch" in str(health["last_error"])
        assert runtime.watchdog.snapshot()["deadman"]["failed"] == 1  # type: ignore[attr-defined]
    finally:
        await runtime.stop()


# -- the store down: an S1 page without the store --------------------------------------------


def _alarm_settings(url: str, hook: str, smtp_port: int) -> object:
    return settings_for(
        f"""
site: watch-test
notify:
  channels:
    hook: {{kind: webhook, url: "{hook}/hook"}}
    mail: {{kind: email, host: 127.0.0.1, port: {smtp_port}, starttls: false}}
people:
  contacts:
    - {{id: alice, name: Alice, email: alice@example.org, backup: bob}}
    - {{id: bob, name: Bob, email: bob@example.org}}
    - {{id: carol, name: Carol, email: carol@example.org}}
  rotations:
    - {{name: primary, type: weekly, start: 2026-01-05, members: [alice]}}
watchdog:
  store_down_grace: 60s
""",
        url,
    )


def _recipients(box: Mailbox) -> list[str]:
    return [rcpt for env in box.messages for rcpt in env.rcpt_tos]


async def test_a_store_outage_pages_s1_directly_repeats_recovers_and_is_recorded(
    tmp_path: Path, clock: FakeClock, receiver: Receiver, mailbox: tuple[int, Mailbox]
) -> None:
    smtp_port, box = mailbox
    proxy = TcpProxy().start()
    try:
        with pg_database() as name:
            settings = _alarm_settings(proxied_url(proxy, name), receiver.url, smtp_port)
            store = Store(settings.store.url)  # type: ignore[attr-defined]
            store.migrate()
            with store.begin() as conn:  # a run-time override lives in the store: unreadable
                add_override(
                    conn, settings, "primary", "carol", clock.now() - 60, clock.now() + 86400,
                    "tests", clock.now(),
                )  # fmt: skip
            spool = SpoolLog(tmp_path / "spool")
            drainer = Drainer(spool, store, clock)

            def alarm() -> StoreAlarm:  # a new one per "process": state only from its file
                return StoreAlarm(settings, store, clock, drainer, spool.directory)  # type: ignore[arg-type]

            first = alarm()
            proxy.cut()
            drainer.drain_once()
            assert drainer.store_down_since == clock.now()
            await first.tick(clock.now())
            assert receiver.seen == [] and box.messages == []  # within the grace
            clock.advance(61)
            await first.tick(clock.now())
            assert len(receiver.seen) == 1 and _recipients(box) == ["alice@example.org"]
            page = receiver.seen[0]
            assert page.json["subject"] == "[S1] watch-test: Nachtwacht's store is unavailable"
            assert "spool" in page.json["body"] and page.json["kind"] == "emergency_alert"
            assert page.headers["Idempotency-Key"].startswith(f"{FINGERPRINT}:")
            mail = message_from_bytes(box.messages[0].content)  # type: ignore[arg-type]
            assert mail["Subject"] == page.json["subject"]

            clock.advance(100)
            await first.tick(clock.now())
            second = alarm()  # a restart, still down: no second page before the repeat
            await second.tick(clock.now())
            assert len(receiver.seen) == 1 and len(box.messages) == 1

            clock.advance(200)  # 300 s after the first page: the policy's repeat
            await second.tick(clock.now())
            assert len(receiver.seen) == 2 and len(box.messages) == 2
            clock.advance(300)  # third page: past backup_after (2), alice's backup too
            await second.tick(clock.now())
            assert sorted(_recipients(box)[2:]) == ["alice@example.org", "bob@example.org"]
            assert len(receiver.seen) == 3
            keys = [s.headers["Idempotency-Key"] for s in receiver.seen]
            assert len(set(keys)) == 3

            proxy.restore()
            clock.advance(30)
            drainer.drain_once()
            assert drainer.store_down_since is None
            await second.tick(clock.now())
            assert receiver.seen[-1].json["subject"].startswith("[resolved] watch-test")
            assert sorted(_recipients(box)[4:]) == ["alice@example.org", "bob@example.org"]
            assert len(receiver.seen) == 4
            assert second.outage is None and second.last is not None

            with store.connect() as conn:
                alert = conn.execute(
                    select(t.alerts).where(t.alerts.c.fingerprint == FINGERPRINT)
                ).mappings().one()  # fmt: skip
                incident = conn.execute(
                    select(t.incidents).where(t.incidents.c.id == alert["incident_id"])
                ).mappings().one()  # fmt: skip
                events = timeline(conn, incident["id"])
                queued = conn.execute(select(func.count()).select_from(t.outbox)).scalar_one()
            down_at = clock.now() - 30 - 300 - 200 - 100 - 61
            assert alert["status"] == "resolved" and alert["started_at"] == down_at
            assert incident["severity"] == 1 and incident["status"] == "resolved"
            assert incident["detected_at"] == down_at + 60
            sent = [e for e in events if e["kind"] == "notification_sent"]
            # webhook: 3 pages + recovery; email: alice 3 pages, bob 1 (round 3), both recovery
            assert len(sent) == 4 + 6
            assert all("directly" in e["message"] for e in sent)
            assert queued == 0  # recorded, not paged a second time through the outbox

            third = alarm()  # a restart after it all: nothing is sent again
            await third.tick(clock.now())
            assert len(receiver.seen) == 4 and len(box.messages) == 6
            state = json.loads((spool.directory / "watchdog-store-alarm.json").read_text())
            assert state["outage"] is None and state["last"]["incident_id"] == incident["id"]
            spool.close()
            store.dispose()
    finally:
        proxy.close()


async def test_a_blip_shorter_than_the_grace_pages_nobody_and_records_nothing(
    tmp_path: Path, clock: FakeClock, receiver: Receiver, sqlite_store: Store
) -> None:
    settings = _alarm_settings(sqlite_store.url, receiver.url, 9)
    spool = SpoolLog(tmp_path / "spool")
    drainer = Drainer(spool, sqlite_store, clock)
    alarm = StoreAlarm(settings, sqlite_store, clock, drainer, spool.directory)  # type: ignore[arg-type]
    drainer.store_down_since = clock.now()
    await alarm.tick(clock.now())
    clock.advance(59)
    await alarm.tick(clock.now())
    drainer.store_down_since = None
    await alarm.tick(clock.now())
    assert receiver.seen == [] and alarm.outage is None
    with sqlite_store.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.incidents)).scalar_one() == 0


async def test_a_page_that_cannot_be_delivered_makes_the_module_fail_loudly(
    tmp_path: Path, clock: FakeClock, sqlite_store: Store
) -> None:
    settings = _alarm_settings(sqlite_store.url, "http://127.0.0.1:9", 9)
    spool = SpoolLog(tmp_path / "spool")
    drainer = Drainer(spool, sqlite_store, clock)
    alarm = StoreAlarm(settings, sqlite_store, clock, drainer, spool.directory)  # type: ignore[arg-type]
    drainer.store_down_since = clock.now() - 120
    with pytest.raises(RuntimeError, match="store-down page not delivered"):
        await alarm.tick(clock.now())
    assert alarm.snapshot()["outage"]["failing"] == 2  # the webhook, and the email to alice


async def test_a_spool_near_full_with_the_store_up_is_an_s1_alert_through_the_pipeline(
    tmp_path: Path, clock: FakeClock, receiver: Receiver, sqlite_store: Store
) -> None:
    settings = _alarm_settings(sqlite_store.url, receiver.url, 9)
    spool = SpoolLog(tmp_path / "spool", max_bytes=1 << 20)
    drainer = Drainer(spool, sqlite_store, clock)
    alarm = StoreAlarm(settings, sqlite_store, clock, drainer, spool.directory)  # type: ignore[arg-type]
    spool.append("stuck", b"x" * 900_000)  # 86 % of the spool, above the 80 % alarm

    def alert() -> tuple[str, int] | None:
        with sqlite_store.connect() as conn:
            row = conn.execute(
                select(t.alerts.c.status, t.alerts.c.severity).where(
                    t.alerts.c.fingerprint == "nachtwacht:spool"
                )
            ).first()
        return None if row is None else (row.status, row.severity)

    await alarm.tick(clock.now())
    assert alert() == ("firing", 1)
    with sqlite_store.connect() as conn:  # it pages like any S1: through the outbox
        assert conn.execute(select(func.count()).select_from(t.outbox)).scalar_one() > 0
    spool.max_bytes = 4 << 20  # room again (here: a bigger bound; in life: the drainer)
    clock.advance(5)
    await alarm.tick(clock.now())
    assert alert() == ("resolved", 1)


def test_the_watchdog_api_shows_store_spool_and_switches(
    sqlite_store: Store, clock: FakeClock
) -> None:
    settings = settings_for("watchdog:\n  deadman_url: http://127.0.0.1:9/p/x\n", sqlite_store.url)
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    token = admin_token(sqlite_store, clock.now(), role="viewer")
    with TestClient(app) as client:
        assert client.get("/api/v1/watchdog").status_code == 401
        body = client.get("/api/v1/watchdog", headers={"Authorization": f"Bearer {token}"}).json()
    assert body["store"]["available"] is True and body["spool"]["bytes"] == 0
    assert body["deadman"] == {
        "configured": True,
        "url": "http://127.0.0.1:9/••••••",  # the path is the token
        "interval": 60.0,
        "sent": 0,
        "failed": 0,
        "last_ok": None,
        "last_error": None,
    }
    assert body["store_alarm"]["enabled"] is True and body["store_alarm"]["outage"] is None


async def test_serve_pages_directly_when_its_postgres_connection_is_cut(
    tmp_path: Path, receiver: Receiver
) -> None:
    """End to end in real time: create_app under uvicorn, the engine's own modules."""
    proxy = TcpProxy().start()
    try:
        with pg_database() as name:
            settings = settings_for(
                f"""
site: e2e
spool:
  dir: {tmp_path / "spool"}
notify:
  channels:
    hook: {{kind: webhook, url: "{receiver.url}/hook"}}
watchdog:
  store_down_grace: 1s
""",
                proxied_url(proxy, name),
            )
            with Served(create_app(settings), free_port()):
                proxy.cut()
                await until(lambda: len(receiver.seen) >= 1, "the direct page", 60)
                assert receiver.seen[0].json["subject"].startswith("[S1] e2e:")
                proxy.restore()
                await until(lambda: len(receiver.seen) >= 2, "the recovery message", 90)
                assert receiver.seen[1].json["subject"].startswith("[resolved] e2e:")
                store = Store(settings.store.url)
                try:
                    await until(lambda: _recorded(store), "the outage's incident", 30)
                finally:
                    store.dispose()
    finally:
        proxy.close()
    assert len(receiver.seen) == 2  # one page, one recovery: nothing through the outbox


def _recorded(store: Store) -> bool:
    with store.connect() as conn:
        row = conn.execute(
            select(t.alerts.c.status).where(t.alerts.c.fingerprint == FINGERPRINT)
        ).first()
    return row is not None and row.status == "resolved"


async def until(condition: Callable[[], bool], what: str, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
