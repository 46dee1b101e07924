"""Pages are never starved by other messages (issue 11 #5), with the product's default limits.

A real webhook receiver stands in for the team chat; the clock is the fake one, so "on
schedule" means: the page left in the very round that queued it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from nachtwacht.checklist import live_items
from nachtwacht.checklist.items import Context
from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import parse_config
from nachtwacht.incidents import escalation, notifications, service
from nachtwacht.incidents.service import record_delivery
from nachtwacht.notify.compose import compose
from nachtwacht.notify.outbox import enqueue
from nachtwacht.notify.sender import OutboxSender
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.incident_fixtures import fire_db, local, outbox, tick
from tests.notify_helpers import Receiver

NIGHT = local(2026, 12, 2, 3, 0)
PAGES = ("emergency_alert", "emergency_notification")  # first pages, repeats, escalation steps


def _site(store: Store, receiver: Receiver, extra: str = "") -> Any:
    # no notify limits, no policy: the shipped defaults (4 a minute, S1 repeats every 5 min)
    return parse_config(
        f"""
store: {{url: "{store.url}"}}
site: drill
people:
  contacts:
    - {{id: olga, name: Olga Oncall, roles: [oncall_engineer], chat: "@olga"}}
    - {{id: tina, name: Tina Techlead, roles: [technical_lead], chat: "@tina"}}
notify:
  channels:
    chat: {{kind: slack, url: "{receiver.url}/chat"}}
{extra}probes: []
""",
        "drill.yaml",
    )


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


def _flood(store: Store, settings: Any, incident_id: int, n: int, now: float) -> None:
    """One more non-page message for the chat: a status update, a runbook notice or a test."""
    with store.begin() as conn:
        if n % 3 == 0:
            escalation.post_update(conn, settings, incident_id, "olga", now, f"still digging {n}")
        elif n % 3 == 1:
            notifications.send_custom(
                conn,
                settings,
                incident_id,
                kind="status_update",
                subject=f"runbook: restart step {n}",
                body="restarted the service",
                to="notified",
                actor="runbook",
                now=now,
            )
        else:
            olga = settings.people.contact("olga")
            test = compose(settings, kind="test", key=f"t{n}", incident=None, contacts=[olga])
            enqueue(conn, test, now)


def _deferred(store: Store, incident_id: int) -> list[dict[str, Any]]:
    with store.connect() as conn:
        return [
            e for e in service.timeline(conn, incident_id) if e["kind"] == "notification_deferred"
        ]


@pytest.mark.parametrize("store", ["sqlite", "postgresql"], indirect=True)
async def test_an_unacknowledged_s1_is_repaged_on_schedule_through_a_flood(
    store: Store, receiver: Receiver, clock: FakeClock
) -> None:
    settings = _site(store, receiver)
    clock.set(NIGHT)
    incident_id = fire_db(store, settings, NIGHT)
    sender = OutboxSender(store, settings, clock, "drill:1", on_outcome=record_delivery)
    try:
        await sender.tick(clock.now())
        n = 0
        while clock.now() < NIGHT + 16 * 60:
            clock.advance(5)
            n += 1
            _flood(store, settings, incident_id, n, clock.now())  # 12 a minute, 4 may go
            tick(store, settings, clock.now())
            await sender.tick(clock.now())
    finally:
        await sender.close()

    pages = [r for r in outbox(store) if r["kind"] in PAGES]
    schedule = [(r["kind"], r["created_at"] - NIGHT) for r in pages]
    assert schedule == [
        ("emergency_alert", 0),
        ("emergency_alert", 300),
        ("emergency_alert", 600),
        ("emergency_notification", 900),  # the response target passed: the tech lead
        ("emergency_alert", 900),
    ]
    # every page left in the round that queued it: none waited behind the flood
    assert [(r["status"], r["sent_at"]) for r in pages] == [
        ("sent", r["created_at"]) for r in pages
    ]
    # while the flood itself was held to the default limit of 4 a minute (tests apart)
    for tests in (True, False):
        sent = [
            r
            for r in outbox(store)
            if r["kind"] not in PAGES and (r["kind"] == "test") == tests and r["sent_at"]
        ]
        for r in sent:
            window = [x for x in sent if r["sent_at"] - 60 < x["sent_at"] <= r["sent_at"]]
            assert len(window) <= 4
    assert any(r["status"] == "pending" for r in outbox(store))  # the backlog waits
    assert len(receiver.seen) == len([r for r in outbox(store) if r["sent_at"]])
    held = _deferred(store, incident_id)
    assert held and all("pages are not held by it" in e["message"] for e in held)


@pytest.mark.parametrize("store", ["sqlite", "postgresql"], indirect=True)
async def test_held_messages_are_on_the_timeline_once_with_the_time_they_go(
    store: Store, receiver: Receiver, clock: FakeClock
) -> None:
    settings = _site(store, receiver)
    clock.set(NIGHT)
    incident_id = fire_db(store, settings, NIGHT)
    sender = OutboxSender(store, settings, clock, "held:1", on_outcome=record_delivery)
    await sender.tick(clock.now())  # the first page
    with store.begin() as conn:
        service.acknowledge(conn, incident_id, "olga", NIGHT)  # no repeats in the way
    for n in range(1, 7):  # six status updates at once: two over the limit
        with store.begin() as conn:
            escalation.post_update(conn, settings, incident_id, "olga", NIGHT, f"update {n}")
    try:
        for _ in range(180):  # every second for three minutes
            await sender.tick(clock.now())
            clock.advance(1)
    finally:
        await sender.close()

    assert all(r["status"] == "sent" for r in outbox(store))
    held = _deferred(store, incident_id)
    # said once, when first held, with the reason and the time: not once a second
    assert len(held) == 1, [e["message"] for e in held]
    text = held[0]["message"]
    assert text.startswith("held by the rate limit (4 messages a minute per destination;")
    assert text.count("status update to chat until 03:01:00") == 2
    o = t.outbox.c
    with store.connect() as conn:
        late = conn.execute(
            select(o.sent_at).where(o.kind == "status_update").order_by(o.sent_at)
        ).scalars()
        assert [s - NIGHT for s in late][-2:] == [60, 60]  # when the timeline said


@pytest.mark.parametrize("store", ["sqlite", "postgresql"], indirect=True)
async def test_the_checklist_alert_test_is_not_held_by_a_flood_of_updates(
    store: Store, receiver: Receiver, clock: FakeClock
) -> None:
    settings = _site(store, receiver, "reviews:\n  checklist: {notify_wait: 3s}\n")
    clock.set(NIGHT)
    incident_id = fire_db(store, settings, NIGHT)
    with store.begin() as conn:
        service.acknowledge(conn, incident_id, "olga", NIGHT)
    sender = OutboxSender(store, settings, clock, "busy:1", on_outcome=record_delivery)
    try:
        await sender.tick(clock.now())  # the first page
        for n in range(4):  # a busy incident: four updates used this minute's budget
            clock.advance(5)
            with store.begin() as conn:
                escalation.post_update(conn, settings, incident_id, "olga", clock.now(), f"u{n}")
            await sender.tick(clock.now())
    finally:
        await sender.close()
    clock.advance(5)
    ctx = Context(settings, store, clock, "tester", incident_id=incident_id)
    result = await asyncio.wait_for(live_items.alerts(ctx), 30)
    assert result.ok, result.detail
    assert result.detail == "test message to olga sent via chat"
