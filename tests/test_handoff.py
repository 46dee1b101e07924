"""The on-call handoff summary: at each rotation handoff the incoming engineer gets, once,
what they take over (open incidents, silences and maintenance, follow-ups due, unverified
contacts), through the outbox; tested by moving the fake clock across a handoff."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select

from nachtwacht.alerts.silences import add_silence
from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import parse_config
from nachtwacht.config.schema import Settings
from nachtwacht.handoff import service as handoff
from nachtwacht.incidents import service as incidents
from nachtwacht.reviews import followups
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store

ZONE = ZoneInfo("Europe/Amsterdam")


def config(store: Store) -> Settings:
    return parse_config(
        f"store: {{url: '{store.url}'}}\n"
        "incidents: {public_url: 'https://nw.example.org'}\n"
        "notify:\n  channels:\n"
        "    mail: {kind: email, host: 127.0.0.1, port: 1, starttls: false}\n"
        "people:\n  contacts:\n"
        "    - {id: alice, name: Alice Anders, email: a@example.org}\n"
        "    - {id: bob, name: Bob Bakker, email: b@example.org}\n"
        "    - {id: tina, name: Tina Techlead, roles: [technical_lead], email: t@example.org}\n"
        "  rotations:\n"
        "    - {name: primary, type: daily, handoff: '09:00', start: 2027-01-01,"
        " members: [alice, bob]}\n",
        "test.yaml",
    )


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZONE).timestamp()


def outbox(store: Store) -> list[dict]:
    with store.connect() as conn:
        return [dict(r) for r in conn.execute(select(t.outbox).order_by(t.outbox.c.id)).mappings()]


def tick(store: Store, settings: Settings, now: float) -> int:
    with store.begin() as conn:
        return handoff.tick(conn, settings, now)


def test_the_incoming_engineer_gets_one_summary_per_handoff(sqlite_store: Store) -> None:
    settings = config(sqlite_store)
    clock = FakeClock(at("2027-01-10 08:00"))  # alice's turn (since Jan 9 09:00)
    assert tick(sqlite_store, settings, clock.now()) == 0  # her handoff was before we watched
    with sqlite_store.begin() as conn:
        inc = incidents.open_incident(
            conn, settings, title="Checkout slow", severity=2, now=clock.now()
        )
        add_silence(
            conn,
            settings,
            matcher="component:db",
            starts_at=clock.now(),
            ends_at=clock.now() + 86400,
            now=clock.now(),
            created_by="alice",
            comment="disk swap",
        )
        followups.add(
            conn,
            settings,
            inc,
            title="Add an index on orders",
            owner="alice",
            due_at=clock.now() + 3600 * 5,
            actor="alice",
            now=clock.now(),
        )
    clock.set(at("2027-01-10 08:59"))
    assert tick(sqlite_store, settings, clock.now()) == 0
    clock.set(at("2027-01-10 09:00:30"))  # the handoff to bob
    assert tick(sqlite_store, settings, clock.now()) == 1
    assert tick(sqlite_store, settings, clock.now() + 60) == 0  # claimed: once per handoff
    [msg] = outbox(sqlite_store)
    assert msg["kind"] == "handoff" and msg["contact"] == "bob"
    assert msg["address"] == "b@example.org" and msg["status"] == "pending"
    body = msg["body"]
    assert "you are on call in rotation primary" in body
    assert f"#{inc} S2 Checkout slow" in body and "not acknowledged" in body
    assert "component:db" in body and "disk swap" in body
    assert "Add an index on orders (owner alice" in body
    assert "Tina Techlead (technical lead): e-mail unverified" in body
    assert "Maintenance in force: none" in body

    clock.set(at("2027-01-11 09:00:10"))  # the next handoff: back to alice
    assert tick(sqlite_store, settings, clock.now()) == 1
    assert [m["contact"] for m in outbox(sqlite_store)] == ["bob", "alice"]


def test_a_handoff_long_missed_is_not_summarised_late(sqlite_store: Store) -> None:
    settings = config(sqlite_store)
    assert tick(sqlite_store, settings, at("2027-01-10 08:00")) == 0
    # the engine was down across the handoff and came back 7 hours later
    assert tick(sqlite_store, settings, at("2027-01-10 16:00")) == 0
    assert outbox(sqlite_store) == []


async def test_the_engine_module_crosses_a_handoff_with_the_fake_clock(
    sqlite_store: Store,
) -> None:
    from nachtwacht.engine.runtime import Runtime

    settings = config(sqlite_store)
    clock = FakeClock(at("2027-01-10 08:58"))
    runtime = Runtime.build(settings, sqlite_store, clock)
    assert await runtime.engine.tick_once("handoff")
    assert outbox(sqlite_store) == []
    clock.advance(3 * 60)  # 09:01: bob takes over
    assert await runtime.engine.tick_once("handoff")
    clock.advance(60)
    assert await runtime.engine.tick_once("handoff")
    assert [(m["kind"], m["contact"]) for m in outbox(sqlite_store)] == [("handoff", "bob")]
    await runtime.stop()


def test_a_handoff_to_someone_no_channel_reaches_is_not_used_up(sqlite_store: Store) -> None:
    """Fault: the incoming engineer has no address when the handoff comes; it is added (a
    config reload) half an hour later. The summary must go then, not count as done."""
    settings = config(sqlite_store)
    bare = settings.model_copy(
        update={
            "people": settings.people.model_copy(
                update={
                    "contacts": [
                        c.model_copy(update={"email": None}) if c.id == "bob" else c
                        for c in settings.people.contacts
                    ]
                }
            )
        }
    )
    clock = FakeClock(at("2027-01-10 08:00"))
    tick(sqlite_store, settings, clock.now())  # the watermark
    clock.set(at("2027-01-10 09:00:30"))  # the handoff to bob, who has no address
    assert tick(sqlite_store, bare, clock.now()) == 0
    clock.set(at("2027-01-10 09:30"))
    assert tick(sqlite_store, settings, clock.now()) == 1
    assert [m["contact"] for m in outbox(sqlite_store)] == ["bob"]
