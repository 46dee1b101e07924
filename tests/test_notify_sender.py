"""The outbox sender: retries, dead letters, rate limits, claims, timeline, wake-up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select, update

from nachtwacht.clock import FakeClock
from nachtwacht.incidents import service
from nachtwacht.incidents.service import record_delivery
from nachtwacht.notify.outbox import DELIVERIES, OutboundMessage
from nachtwacht.notify.sender import OutboxSender, backoff
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.helpers import until
from tests.notify_helpers import Receiver, queue, settings, webhook_messages


def site(receiver: Receiver, extra: str = "", store: Store | None = None, rate: int = 1000) -> Any:
    # `rate` sets both budgets: these tests are about the limiter, whatever the kind
    return settings(
        f"""
site: shop
people:
  contacts:
    - {{id: alice, name: Alice, roles: [oncall_engineer], phone: "+31600000001"}}
    - {{id: bob, name: Bob, roles: [technical_lead], phone: "+31600000002"}}
notify:
  rate_limit_per_minute: {rate}
  page_rate_limit_per_minute: {rate}
  channels:
    hook: {{kind: webhook, url: "{receiver.url}/hook"}}
    text: {{kind: sms, url: "{receiver.url}/sms"}}
{extra}
""",
        store,
    )


def rows(store: Store) -> list[dict[str, Any]]:
    with store.connect() as conn:
        return [dict(r) for r in conn.execute(select(t.outbox).order_by(t.outbox.c.id)).mappings()]


def timeline(store: Store, incident_id: int) -> list[tuple[str, str]]:
    with store.connect() as conn:
        return [(e["kind"], e["message"]) for e in service.timeline(conn, incident_id)]


def open_incident(store: Store, cfg: Any, now: float) -> int:
    with store.begin() as conn:
        return service.open_incident(conn, cfg, title="Database down", severity=1, now=now)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
async def sender_factory(sqlite_store: Store, clock: FakeClock) -> AsyncIterator[Any]:
    made: list[OutboxSender] = []

    def make(cfg: Any, store: Store = sqlite_store, **kw: Any) -> OutboxSender:
        s = OutboxSender(
            store,
            cfg,
            kw.pop("clock", clock),
            kw.pop("instance", None),
            on_outcome=record_delivery,
            **kw,
        )
        made.append(s)
        return s

    yield make
    for s in made:
        await s.close()


async def test_a_failed_send_is_retried_with_backoff_and_the_same_key(
    sqlite_store: Store, clock: FakeClock, receiver: Receiver, sender_factory: Any
) -> None:
    receiver.answers = [500, 503, 200]
    cfg = site(receiver)
    incident_id = open_incident(sqlite_store, cfg, clock.now())
    msg = webhook_messages(1)[0]
    msg.incident_id = incident_id
    queue(sqlite_store, [msg], clock.now())
    sender = sender_factory(cfg)
    start = clock.now()

    assert await sender.tick(clock.now()) == 1
    [row] = rows(sqlite_store)
    assert row["status"] == "pending" and row["attempts"] == 1
    assert row["next_attempt_at"] == start + 5  # retry_backoff
    assert "HTTP 500" in row["last_error"]
    clock.advance(4.9)
    assert await sender.tick(clock.now()) == 0  # not yet
    clock.advance(0.1)
    assert await sender.tick(clock.now()) == 1
    [row] = rows(sqlite_store)
    assert row["next_attempt_at"] == clock.now() + 10  # doubled
    clock.advance(10)
    assert await sender.tick(clock.now()) == 1
    [row] = rows(sqlite_store)
    assert row["status"] == "sent" and row["attempts"] == 3 and row["sent_at"] == clock.now()
    assert row["last_error"] is None
    assert list(receiver.keys.items()) == [("k0", 3)]  # one key, three tries
    events = [e for e in timeline(sqlite_store, incident_id) if e[0].startswith("notification")]
    assert [k for k, _ in events] == [
        "notification_failed",
        "notification_failed",
        "notification_sent",
    ]
    assert "page to hook failed (attempt 1 of 10): webhook hook: HTTP 500" in events[0][1]
    assert "retrying at" in events[0][1]
    assert events[2][1] == "page posted to hook"


def test_backoff_doubles_and_is_capped_at_ten_minutes(receiver: Receiver) -> None:
    cfg = site(receiver)
    assert [backoff(cfg, n) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert backoff(cfg, 30) == 600


async def test_a_permanent_error_is_dead_after_one_try(
    sqlite_store: Store, clock: FakeClock, receiver: Receiver, sender_factory: Any
) -> None:
    receiver.answers = [400]
    cfg = site(receiver)
    incident_id = open_incident(sqlite_store, cfg, clock.now())
    msg = webhook_messages(1)[0]
    msg.incident_id = incident_id
    queue(sqlite_store, [msg], clock.now())
    sender = sender_factory(cfg)
    assert await sender.tick(clock.now()) == 1
    [row] = rows(sqlite_store)
    assert row["status"] == "dead" and row["attempts"] == 1 and "HTTP 400" in row["last_error"]
    clock.advance(3600)
    assert await sender.tick(clock.now()) == 0
    assert len(receiver.seen) == 1
    kind, text = timeline(sqlite_store, incident_id)[-1]
    assert kind == "notification_failed" and text.endswith("gave up (permanent error)")


async def test_max_attempts_failures_make_a_row_dead(
    sqlite_store: Store, clock: FakeClock, receiver: Receiver, sender_factory: Any
) -> None:
    receiver.answers = [500] * 10
    cfg = site(receiver, "  max_attempts: 3\n  retry_backoff: 1s")
    queue(sqlite_store, webhook_messages(1), clock.now())
    sender = sender_factory(cfg)
    for _ in range(6):
        await sender.tick(clock.now())
        clock.advance(600)
    [row] = rows(sqlite_store)
    assert row["status"] == "dead" and row["attempts"] == 3
    assert len(receiver.seen) == 3


async def test_a_contact_over_the_rate_limit_waits_and_is_never_dropped(
    sqlite_store: Store, clock: FakeClock, receiver: Receiver, sender_factory: Any
) -> None:
    cfg = site(receiver, rate=2)
    t0 = clock.now()
    msgs = [
        OutboundMessage(
            idempotency_key=f"p{i}:{who}",
            kind="emergency_alert",
            channel="text",
            subject=f"page {i}",
            body=f"page {i}",
            contact=who,
            address=phone,
        )
        for i in range(3)
        for who, phone in (("alice", "+31600000001"), ("bob", "+31600000002"))
    ]
    queue(sqlite_store, msgs, t0)
    sender = sender_factory(cfg)
    # two per phone number in the first minute; each number has its own limit
    assert await sender.tick(t0) == 4
    waiting = [r for r in rows(sqlite_store) if r["status"] == "pending"]
    assert {r["contact"] for r in waiting} == {"alice", "bob"}
    assert all(r["next_attempt_at"] == t0 + 60 and r["attempts"] == 0 for r in waiting)
    clock.advance(30)
    assert await sender.tick(clock.now()) == 0
    clock.advance(30)
    assert await sender.tick(clock.now()) == 2
    assert all(r["status"] == "sent" for r in rows(sqlite_store))
    assert sorted(receiver.keys) == sorted(m.idempotency_key for m in msgs)


async def test_a_broadcast_channel_is_one_destination_for_the_rate_limit(
    sqlite_store: Store, clock: FakeClock, receiver: Receiver, sender_factory: Any
) -> None:
    cfg = site(receiver, rate=3)
    queue(sqlite_store, webhook_messages(7), clock.now())
    sender = sender_factory(cfg)
    sent_per_minute = []
    for _ in range(3):
        sent_per_minute.append(await sender.tick(clock.now()))
        clock.advance(60)
    assert sent_per_minute == [3, 3, 1]
    assert len(receiver.keys) == 7


async def test_enqueueing_the_same_key_twice_keeps_one_row(
    sqlite_store: Store, clock: FakeClock
) -> None:
    first = queue(sqlite_store, webhook_messages(3), clock.now())
    again = queue(sqlite_store, webhook_messages(3) + webhook_messages(1, prefix="n"), clock.now())
    assert len(first) == 3 and len(again) == 1
    assert [r["idempotency_key"] for r in rows(sqlite_store)] == ["k0", "k1", "k2", "n0"]


async def test_two_senders_racing_for_the_same_rows_claim_each_once(
    store: Store, clock: FakeClock, receiver: Receiver
) -> None:
    """Both read the same due rows; the conditional update gives each row to one of them."""
    cfg = site(receiver, store=store)
    queue(store, webhook_messages(6), clock.now())
    other = Store(store.url)
    a = OutboxSender(store, cfg, clock, "a", concurrency=10, on_outcome=record_delivery)
    b = OutboxSender(other, cfg, clock, "b", concurrency=10, on_outcome=record_delivery)
    try:
        now = clock.now()
        plan_a = await asyncio.to_thread(a._plan, now, 10, [])
        plan_b = await asyncio.to_thread(b._plan, now, 10, [])
        assert sorted(plan_a.chosen) == sorted(plan_b.chosen)  # they saw the same rows
        got_b = await asyncio.to_thread(b._take, now, plan_b)
        got_a = await asyncio.to_thread(a._take, now, plan_a)
        assert len(got_b) == 6 and got_a == []
        assert {r["claimed_by"] for r in rows(store)} == {"b"}
    finally:
        await a.close()
        await b.close()
        other.dispose()


async def test_two_senders_on_one_store_deliver_every_row_exactly_once(
    store: Store, clock: FakeClock, receiver: Receiver
) -> None:
    cfg = site(receiver, store=store)
    queue(store, webhook_messages(40), clock.now())
    other = Store(store.url)
    a = OutboxSender(store, cfg, clock, "a", concurrency=8, on_outcome=record_delivery)
    b = OutboxSender(other, cfg, clock, "b", concurrency=8, on_outcome=record_delivery)
    try:
        for _ in range(20):
            claimed = await asyncio.gather(a.tick(clock.now()), b.tick(clock.now()))
            if sum(claimed) == 0:
                break
    finally:
        await a.close()
        await b.close()
        other.dispose()
    assert len(receiver.keys) == 40
    assert set(receiver.keys.values()) == {1}
    assert a.sent + b.sent == 40
    assert {r["status"] for r in rows(store)} == {"sent"}


async def test_rows_of_a_dead_sender_are_taken_over_when_the_lease_ends(
    sqlite_store: Store, clock: FakeClock, receiver: Receiver, sender_factory: Any
) -> None:
    cfg = site(receiver)
    incident_id = open_incident(sqlite_store, cfg, clock.now())
    msg = webhook_messages(1)[0]
    msg.incident_id = incident_id
    queue(sqlite_store, [msg], clock.now())
    crashed = sender_factory(cfg, instance="crashed", lease=30)
    # it claims the row and dies before sending: the row stays `sending`
    plan = await asyncio.to_thread(crashed._plan, clock.now(), 8, [])
    [claimed] = await asyncio.to_thread(crashed._take, clock.now(), plan)
    survivor = sender_factory(cfg, instance="survivor", lease=30)
    assert await survivor.tick(clock.now()) == 0  # the lease still holds
    clock.advance(30.1)
    assert await survivor.tick(clock.now()) == 1
    [row] = rows(sqlite_store)
    assert row["status"] == "sent" and row["claimed_by"] == "survivor" and row["attempts"] == 2
    # the crashed sender coming back late must not overwrite the outcome or log it twice
    await asyncio.to_thread(crashed._finish, claimed, None, clock.now())
    sent_events = [k for k, _ in timeline(sqlite_store, incident_id) if k == "notification_sent"]
    assert sent_events == ["notification_sent"]
    assert crashed.sent == 0


async def test_close_waits_for_sends_in_flight_and_records_them(
    sqlite_store: Store, clock: FakeClock, sender_factory: Any
) -> None:
    slow = await Receiver(delay=0.3).start()
    try:
        cfg = site(slow)
        queue(sqlite_store, webhook_messages(3), clock.now())
        sender = sender_factory(cfg)
        assert await sender.tick(clock.now(), wait=False) == 3
        assert {r["status"] for r in rows(sqlite_store)} == {"sending"}
        await sender.close()
        assert {r["status"] for r in rows(sqlite_store)} == {"sent"}
        assert await sender.tick(clock.now()) == 0  # a closed sender claims nothing
    finally:
        await slow.stop()


async def test_concurrency_bounds_the_rows_in_flight(
    sqlite_store: Store, clock: FakeClock, sender_factory: Any
) -> None:
    slow = await Receiver(delay=0.2).start()
    try:
        cfg = site(slow)
        queue(sqlite_store, webhook_messages(10), clock.now())
        sender = sender_factory(cfg, concurrency=3)
        assert await sender.tick(clock.now(), wait=False) == 3
        assert await sender.tick(clock.now(), wait=False) == 0  # full
        assert sum(r["status"] == "sending" for r in rows(sqlite_store)) == 3
    finally:
        await slow.stop()


async def test_a_removed_channel_makes_its_rows_dead_with_a_reason(
    sqlite_store: Store, clock: FakeClock, receiver: Receiver, sender_factory: Any
) -> None:
    queue(sqlite_store, webhook_messages(1, channel="gone"), clock.now())
    sender = sender_factory(site(receiver))
    await sender.tick(clock.now())
    [row] = rows(sqlite_store)
    assert row["status"] == "dead" and "'gone' is not in the config" in row["last_error"]


async def test_the_loop_sends_new_work_when_woken_not_on_its_timer(
    sqlite_store: Store, clock: FakeClock, receiver: Receiver
) -> None:
    """No polling on the hot path: enqueue + wake() reaches the receiver without the timer.

    The loop's timer is set beyond the test's reach, so each delivery can only have come from
    wake(); what is asserted is that, not how many milliseconds it took on this machine.
    """
    cfg = site(receiver)
    sender = OutboxSender(sqlite_store, cfg, clock, "loop", on_outcome=record_delivery)
    sender.idle_wait = 3600.0
    ticks = 0
    tick = sender.tick

    async def counted(now: float, **kw: Any) -> int:
        nonlocal ticks
        ticks += 1
        return await tick(now, **kw)

    sender.tick = counted  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(sender.loop(stop))
    await until(lambda: ticks == 1, "the first (empty) tick")

    def enqueue_and_wake(i: int) -> None:
        # as a service function would: commit in a worker thread, then wake the sender
        queue(sqlite_store, webhook_messages(1, prefix=f"w{i}-"), clock.now())
        sender.wake()

    try:
        for i in range(10):
            await asyncio.to_thread(enqueue_and_wake, i)
            await until(lambda i=i: len(receiver.keys) == i + 1, f"message {i} after wake()")
    finally:
        stop.set()
        await task
        await sender.close()
    assert sorted(receiver.keys) == sorted(f"w{i}-0" for i in range(10))
    assert clock.now() == 1_800_000_000.0  # nothing waited on the sender's clock either


async def test_the_loop_keeps_going_when_the_store_fails(
    tmp_path: Any, clock: FakeClock, receiver: Receiver
) -> None:
    broken = Store(f"sqlite:///{tmp_path / 'never-migrated.db'}")  # no outbox table
    sender = OutboxSender(broken, site(receiver), clock, "loop", on_outcome=record_delivery)
    stop = asyncio.Event()
    task = asyncio.create_task(sender.loop(stop))
    await until(lambda: sender.last_error is not None, "the store error to be reported")
    assert "outbox" in str(sender.last_error)
    assert not task.done()
    stop.set()
    await task
    await sender.close()
    broken.dispose()


async def test_deferred_rows_are_not_counted_as_attempts(
    sqlite_store: Store, clock: FakeClock, receiver: Receiver, sender_factory: Any
) -> None:
    cfg = site(receiver, rate=1)
    queue(sqlite_store, webhook_messages(2), clock.now())
    # a send 30 s ago still counts against this minute
    with sqlite_store.begin() as conn:
        conn.execute(
            update(t.outbox)
            .where(t.outbox.c.idempotency_key == "k0")
            .values(status="sent", sent_at=clock.now() - 30, next_attempt_at=clock.now() - 30)
        )
    sender = sender_factory(cfg)
    assert await sender.tick(clock.now()) == 0
    row = rows(sqlite_store)[1]
    assert row["attempts"] == 0 and row["next_attempt_at"] == clock.now() + 30


async def test_messages_of_a_dead_process_on_this_host_are_reclaimed_at_start(
    sqlite_store: Store, clock: FakeClock, receiver: Receiver, sender_factory: Any
) -> None:
    import os
    import socket
    import subprocess

    cfg = site(receiver, store=sqlite_store)
    ids = queue(sqlite_store, webhook_messages(3), clock.now())
    dead_pid = subprocess.Popen(["true"])
    dead_pid.wait()
    host = socket.gethostname()
    owners = [f"{host}:{dead_pid.pid}", f"{host}:{os.getppid()}", f"elsewhere:{dead_pid.pid}"]
    with sqlite_store.begin() as conn:
        for row_id, owner in zip(ids, owners, strict=True):
            conn.execute(
                update(t.outbox)
                .where(t.outbox.c.id == row_id)
                .values(status="sending", claimed_by=owner, claimed_until=clock.now() + 600)
            )
    sender = sender_factory(cfg, instance=f"{host}:{os.getpid()}")
    # only the one whose process is gone from this host: a live process or another host's
    # process may still be sending, so their leases run out as before
    assert sender.reclaim_orphans(clock.now()) == 1
    await sender.tick(clock.now(), wait=True)
    sent = [r["idempotency_key"] for r in rows(sqlite_store) if r["status"] == "sent"]
    assert sent == ["k0"]
    assert [s.json["subject"] for s in receiver.seen if s.path == "/hook"] == ["message 0"]


async def test_deliveries_are_counted_by_channel_for_metrics(
    sqlite_store: Store, clock: FakeClock, receiver: Receiver, sender_factory: Any
) -> None:
    """What /metrics reads as nachtwacht_notifications_{queued,sent,failed,deferred}_total."""

    def counts() -> dict[str, int]:
        what = ("queued", "sent", "failed", "deferred")
        return {w: DELIVERIES.counts.get(("hook", w), 0) for w in what}

    before = counts()
    receiver.answers = [500]
    cfg = site(receiver, rate=1)  # the broadcast channel is one destination: one a minute
    queue(sqlite_store, webhook_messages(3), clock.now())
    sender = sender_factory(cfg)
    assert await sender.tick(clock.now()) == 1
    moved = {k: v - before[k] for k, v in counts().items()}
    assert moved == {"queued": 3, "sent": 0, "failed": 1, "deferred": 2}
    clock.advance(3600)
    while await sender.tick(clock.now()):
        clock.advance(3600)
    moved = {k: v - before[k] for k, v in counts().items()}
    assert moved["sent"] == 3 and moved["failed"] == 1 and moved["queued"] == 3
