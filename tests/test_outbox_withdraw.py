"""No stale page: an acknowledgement or a resolution withdraws what it made untrue (issue 11 #4).

Queued pages are cancelled in the ack's (or the resolution's) own transaction and the
timeline says so; a page a sender had already picked up when that committed is checked again
at the claim and not sent; the acknowledge link of a resolved incident records nothing.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import parse_config
from nachtwacht.incidents import escalation, service
from nachtwacht.incidents.service import record_delivery
from nachtwacht.notify.sender import OutboxSender
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.incident_fixtures import (
    deliver,
    events,
    fire_db,
    local,
    outbox,
    site,
    tick,
)
from tests.notify_helpers import Receiver

NIGHT = local(2026, 12, 2, 3, 0)


def _status(store: Store) -> dict[str, list[str]]:
    """Outbox statuses by idempotency key prefix (`inc1:page2`, `inc1:update1` ...)."""
    found: dict[str, list[str]] = {}
    for row in outbox(store):
        found.setdefault(row["idempotency_key"].split(":")[1], []).append(row["status"])
    return found


def test_acknowledging_withdraws_the_queued_pages_and_says_so(store: Store) -> None:
    settings = site(store)
    inc_id = fire_db(store, settings, NIGHT)
    deliver(store, NIGHT + 1)  # the first page went out
    tick(store, settings, NIGHT + 300)  # page 2: Olga (mail) and the chat
    tick(store, settings, NIGHT + 600)  # page 3: and her backup Bert
    with store.begin() as conn:
        escalation.post_update(conn, settings, inc_id, "olga", NIGHT + 610, "looking at it")
        assert service.acknowledge(conn, inc_id, "olga", NIGHT + 620)

    status = _status(store)
    assert status["step0"] == ["sent", "sent"]
    assert status["page2"] == ["cancelled"] * 2 and status["page3"] == ["cancelled"] * 3
    assert status["update1"] == ["pending"] * 3  # an update stays true after an ack
    withdrawn = [m for k, m in events(store, inc_id) if k == "notification_withdrawn"]
    assert withdrawn == ["5 queued pages withdrawn: acknowledged by olga"]
    cancelled = [r for r in outbox(store) if r["status"] == "cancelled"]
    assert {r["last_error"] for r in cancelled} == {"withdrawn: acknowledged by olga"}


def test_resolving_withdraws_every_queued_page_and_update_but_not_the_resolved_notice(
    store: Store,
) -> None:
    settings = site(store)
    inc_id = fire_db(store, settings, NIGHT)
    deliver(store, NIGHT + 1)
    tick(store, settings, NIGHT + 300)  # page 2, still queued (held, or retrying)
    with store.begin() as conn:
        escalation.post_update(conn, settings, inc_id, "olga", NIGHT + 310, "failing over")
        escalation.resolve(conn, settings, inc_id, "olga", NIGHT + 320, "replica promoted")

    status = _status(store)
    assert status["page2"] == ["cancelled"] * 2
    assert status["update1"] == ["cancelled"] * 2  # it says "Investigating": no longer true
    assert status["resolved"] == ["pending"] * 2  # to Olga's mail and the chat
    withdrawn = [m for k, m in events(store, inc_id) if k == "notification_withdrawn"]
    assert withdrawn == [
        "4 queued messages withdrawn (2 pages, 2 status updates): resolved by olga"
    ]


def test_an_incident_resolved_before_its_first_page_went_out_sends_no_all_clear(
    store: Store,
) -> None:
    settings = site(store)
    inc_id = fire_db(store, settings, NIGHT)  # queued, no sender got to it
    with store.begin() as conn:
        escalation.resolve(conn, settings, inc_id, "nachtwacht", NIGHT + 2)
    assert {r["status"] for r in outbox(store)} == {"cancelled"}
    assert ("note", "no resolved notice: nobody was notified") in events(store, inc_id)


# -- the race: a sender had already picked the page up -----------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


def _hook_site(store: Store, receiver: Receiver) -> Any:
    return parse_config(
        f"""
store: {{url: "{store.url}"}}
people:
  contacts:
    - {{id: olga, name: Olga Oncall, roles: [oncall_engineer], chat: "@olga"}}
notify:
  channels:
    hook: {{kind: webhook, url: "{receiver.url}/hook"}}
probes: []
""",
        "race.yaml",
    )


@pytest.mark.parametrize("store", ["sqlite", "postgresql"], indirect=True)
async def test_a_page_picked_up_before_the_ack_committed_is_not_sent(
    store: Store, receiver: Receiver, clock: FakeClock
) -> None:
    settings = _hook_site(store, receiver)
    clock.set(NIGHT)
    inc_id = fire_db(store, settings, NIGHT)
    sender = OutboxSender(store, settings, clock, "race:1", on_outcome=record_delivery)
    try:
        plan = sender._plan(clock.now(), 8, [])  # read as due ...
        clock.advance(2)
        with store.begin() as conn:  # ... the ack commits ...
            service.acknowledge(conn, inc_id, "olga", clock.now())
        # ... and the claim's conditional update no longer finds it pending
        assert sender._take(clock.now(), plan) == []
    finally:
        await sender.close()
    assert receiver.seen == []
    assert [r["status"] for r in outbox(store)] == ["cancelled"]


@pytest.mark.parametrize("store", ["sqlite", "postgresql"], indirect=True)
async def test_a_page_claimed_by_a_sender_that_died_is_not_sent_after_the_ack(
    store: Store, receiver: Receiver, clock: FakeClock
) -> None:
    settings = _hook_site(store, receiver)
    clock.set(NIGHT)
    inc_id = fire_db(store, settings, NIGHT)
    o = t.outbox.c
    with store.begin() as conn:  # another process claimed the page and died mid-send
        conn.execute(
            update(t.outbox).values(
                status="sending", claimed_by="elsewhere:1", claimed_until=NIGHT + 60, attempts=1
            )
        )
    clock.advance(30)
    with store.begin() as conn:
        service.acknowledge(conn, inc_id, "olga", clock.now())
    assert [r["status"] for r in outbox(store)] == ["sending"]  # a claimed row is not recalled
    clock.advance(31)  # the dead sender's lease ran out
    sender = OutboxSender(store, settings, clock, "race:2", on_outcome=record_delivery)
    try:
        assert await sender.tick(clock.now()) == 0
    finally:
        await sender.close()
    assert receiver.seen == []  # "not acknowledged yet" is not true any more
    [row] = outbox(store)
    assert row["status"] == "cancelled" and row["last_error"] == "withdrawn: acknowledged by olga"
    assert (
        "notification_withdrawn",
        "page to hook withdrawn before sending: acknowledged by olga",
    ) in events(store, inc_id)
    with store.connect() as conn:
        assert conn.execute(t.outbox.select().where(o.status == "sending")).first() is None


@pytest.mark.parametrize("store", ["sqlite", "postgresql"], indirect=True)
async def test_a_page_written_after_the_ack_is_still_sent(
    store: Store, receiver: Receiver, clock: FakeClock
) -> None:
    """An escalation step after the ack says "acknowledged by": that is true, it goes out."""
    settings = _hook_site(store, receiver)
    clock.set(NIGHT)
    inc_id = fire_db(store, settings, NIGHT)
    deliver(store, NIGHT + 1)
    with store.begin() as conn:
        service.acknowledge(conn, inc_id, "olga", NIGHT + 60)
        escalation.escalate_now(conn, settings, inc_id, "olga", NIGHT + 61, "need the lead")
    clock.set(NIGHT + 61)
    sender = OutboxSender(store, settings, clock, "after:1", on_outcome=record_delivery)
    try:
        assert await sender.tick(clock.now()) == 1
    finally:
        await sender.close()
    assert [s.json["kind"] for s in receiver.seen] == ["emergency_notification"]


# -- the acknowledge link ----------------------------------------------------------------------


def test_the_ack_link_of_a_resolved_incident_says_so_and_records_nothing(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from nachtwacht.web.app import create_app

    settings = parse_config(f'store: {{url: "sqlite:///{tmp_path / "nw.db"}"}}\nprobes: []\n', "x")
    store = Store(settings.store.url)
    app = create_app(settings, store, start_engine=False)
    with TestClient(app) as client:
        with store.begin() as conn:
            inc_id = service.open_incident(conn, settings, title="Site down", severity=3, now=NIGHT)
            escalation.resolve(conn, settings, inc_id, "olga", NIGHT + 60)
            token = service.require(conn, inc_id)["ack_token"]
        before = events(store, inc_id)
        page = client.get(f"/ack/{token}")
        assert page.status_code == 200
        assert "already resolved" in page.text and "<form" not in page.text
        done = client.post(f"/ack/{token}", data={"actor": "Olga"})
        assert done.status_code == 200
        assert "already resolved" in done.text and "nothing was recorded" in done.text
        assert "Thank you" not in done.text
        with store.connect() as conn:
            assert service.require(conn, inc_id)["acknowledged_at"] is None
        assert events(store, inc_id) == before
    store.dispose()


async def test_a_claim_racing_the_ack_waits_for_it_and_finds_the_page_gone(
    store: Store, receiver: Receiver, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender claims while the ack is half done (pages withdrawn, incident not yet updated).

    The withdrawn rows stay locked until the ack commits: the claim waits for it, then finds
    them cancelled. On SQLite the claim waits for the whole write transaction instead.
    """
    settings = _hook_site(store, receiver)
    clock.set(NIGHT)
    inc_id = fire_db(store, settings, NIGHT)
    sender = OutboxSender(store, settings, clock, "race:1", on_outcome=record_delivery)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    racing: list[concurrent.futures.Future[Any]] = []
    touch = service._touch

    def claim_in_the_middle(*args: Any, **kwargs: Any) -> None:
        if not racing:  # between the ack's withdraw and its update of the incident
            racing.append(pool.submit(sender._claim, clock.now(), 8, [], None))
        touch(*args, **kwargs)

    monkeypatch.setattr(service, "_touch", claim_in_the_middle)
    clock.advance(2)
    with store.begin() as conn:
        service.acknowledge(conn, inc_id, "olga", clock.now())
    rows, _ = racing[0].result(timeout=60)
    pool.shutdown()
    await sender.close()
    assert rows == [] and receiver.seen == []
    assert {r["status"] for r in outbox(store)} == {"cancelled"}


def test_an_acknowledged_incidents_lead_step_says_it_was_acknowledged(
    sqlite_store: Store,
) -> None:
    settings = site(sqlite_store)
    inc_id = fire_db(sqlite_store, settings, NIGHT)
    deliver(sqlite_store, NIGHT + 1)
    for minutes in (5, 10):
        tick(sqlite_store, settings, NIGHT + minutes * 60)
        deliver(sqlite_store, NIGHT + minutes * 60 + 1)
    tick(sqlite_store, settings, NIGHT + 15 * 60)  # the technical lead's step is queued
    with sqlite_store.begin() as conn:
        service.acknowledge(conn, inc_id, "olga", NIGHT + 15 * 60 + 5)
    clock = FakeClock(NIGHT + 15 * 60 + 6)
    sender = OutboxSender(sqlite_store, settings, clock, "t:1", on_outcome=record_delivery)
    rows, _ = sender._claim(clock.now(), 50, [], None)
    lead = [r for r in rows if r["kind"] == "emergency_notification"]
    assert lead, "the lead's step was withdrawn by the ack"
    for row in lead:
        assert row["body"].startswith("Acknowledged by olga at "), row["body"]
    assert not [r for r in rows if r["kind"] == "emergency_alert"]  # page 4 was withdrawn


def test_a_resolved_notice_still_queued_when_the_incident_reopens_is_withdrawn(
    sqlite_store: Store,
) -> None:
    settings = site(sqlite_store)
    inc_id = fire_db(sqlite_store, settings, NIGHT)
    deliver(sqlite_store, NIGHT + 1)
    with sqlite_store.begin() as conn:
        escalation.resolve(conn, settings, inc_id, "olga", NIGHT + 60, "fixed")
        service.set_status(conn, inc_id, "investigating", "olga", NIGHT + 70, "back again")
    resolved = [r for r in outbox(sqlite_store) if r["kind"] == "resolved"]
    assert resolved and {r["status"] for r in resolved} == {"cancelled"}
