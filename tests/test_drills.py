"""Drills (issue 18): a synthetic S1 fault through the real pipeline, marked DRILL end to end,
measured against the protocol's targets, left out of every real statistic; the schedule's
reminder sent once per period.

Real SQLite store, the real outbox sender and mail channel against an aiosmtpd server; time is
the FakeClock's.
"""

from __future__ import annotations

import email
from collections.abc import Iterator
from email.message import Message
from email.policy import default as default_policy

import pytest
from sqlalchemy import select

from nachtwacht.alerts import service as alerts
from nachtwacht.checklist import gate
from nachtwacht.checklist import service as checklist
from nachtwacht.checklist.items import ItemResult
from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import parse_config
from nachtwacht.config.schema import Settings
from nachtwacht.drills import report, schedule
from nachtwacht.drills import service as drills
from nachtwacht.incidents import escalation
from nachtwacht.incidents import service as incidents
from nachtwacht.notify.sender import OutboxSender
from nachtwacht.probes.report import status_report
from nachtwacht.reviews import monthly
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.web.overview import incidents_data
from tests.conftest import closed_port
from tests.incident_fixtures import local, probe_signal, tick
from tests.notify_helpers import Mailbox, smtp_server

SITE = """
site: vereniging
timezone: Europe/Amsterdam
people:
  contacts:
    - {{id: olga, name: Olga Oncall, roles: [oncall_engineer], email: olga@example.org}}
    - {{id: tina, name: Tina Techlead, roles: [technical_lead], email: tina@example.org}}
    - {{id: mark, name: Mark Manager, roles: [management, operations_manager],
       email: mark@example.org}}
notify:
  channels:
    mail: {{kind: email, host: 127.0.0.1, port: {port}, starttls: false}}
probes:
  - {{name: db, kind: tcp, host: 127.0.0.1, port: 3306, component: database, severity: 1}}
"""


@pytest.fixture
def smtp() -> Iterator[tuple[int, Mailbox]]:
    controller, box = smtp_server()
    yield controller.port, box
    controller.stop()


def _settings(store: Store, port: int) -> Settings:
    return parse_config(f"store:\n  url: '{store.url}'\n" + SITE.format(port=port), "site.yaml")


def _mails(box: Mailbox) -> list[Message]:
    return [
        email.message_from_bytes(bytes(m.content), policy=default_policy)  # type: ignore[arg-type]
        for m in box.messages
    ]


def _body(msg: Message) -> str:
    part = msg.get_body(preferencelist=("plain",))  # type: ignore[attr-defined]
    return str(part.get_content()) if part is not None else ""


async def _send(store: Store, settings: Settings, clock: FakeClock) -> int:
    sender = OutboxSender(store, settings, clock, on_outcome=incidents.record_delivery)
    try:
        return await sender.tick(clock.now())
    finally:
        await sender.close()


async def test_an_s1_drill_pages_as_a_drill_and_its_report_has_the_figures(
    store: Store, smtp: tuple[int, Mailbox]
) -> None:
    port, box = smtp
    settings = _settings(store, port)
    t0 = local(2026, 12, 8, 14, 0)  # a Tuesday afternoon
    clock = FakeClock(t0)
    with store.begin() as conn:
        drill = drills.run(conn, settings, "database-down", clock.now(), "mark")
    incident_id = drill["incident_id"]
    assert drill["status"] == "running" and incident_id is not None
    with store.connect() as conn:
        inc = incidents.require(conn, incident_id)
        alert = conn.execute(select(t.alerts).where(t.alerts.c.incident_id == incident_id))
        assert inc["drill_id"] == drill["id"] and alert.mappings().one()["drill_id"] == drill["id"]
    # the restart, repair and restore steps are never run by a drill; unconfirmed, nothing is
    assert {s["mode"] for s in drill["steps"]} == {"simulated"}

    clock.advance(60)  # the sender picks the page up a minute later
    assert await _send(store, settings, clock) == 1
    clock.advance(240)  # t0 + 5 min: Olga acknowledges
    with store.begin() as conn:
        assert incidents.acknowledge(conn, incident_id, "olga", clock.now())
    clock.advance(600)  # t0 + 15 min: mitigating; the policy brings in the technical lead
    with store.begin() as conn:
        incidents.set_status(conn, incident_id, "mitigating", "olga", clock.now())
    assert tick(store, settings, clock.now()) == 1
    assert await _send(store, settings, clock) == 1
    clock.advance(1100)  # t0 + 33 min 20 s: the first status update, 3 min 20 s late
    with store.begin() as conn:
        escalation.post_update(
            conn, settings, incident_id, "olga", clock.now(), "database restarted, watching"
        )
    await _send(store, settings, clock)
    clock.advance(100)
    with store.begin() as conn:
        checklist.record(
            conn, incident_id, [ItemResult("database", True, "answers")], "olga", clock.now()
        )
    clock.advance(200)  # t0 + 38 min 20 s: resolved, backed by the checklist
    with store.begin() as conn:
        escalation.resolve(
            conn,
            settings,
            incident_id,
            "olga",
            clock.now(),
            "database back",
            gate=gate.resolution_gate,
        )
    await _send(store, settings, clock)
    clock.advance(60)
    with store.begin() as conn:  # the engine's tick ends a drill whose incident resolved
        assert drills.end_due(conn, settings, clock.now()) == [drill["id"]]
        assert drills.end_due(conn, settings, clock.now()) == []
        done = drills.require(conn, drill["id"])
        month = monthly.report(conn, settings, "2026-12", clock.now())
    # the whole drill left the month's real figures as they were: no incident, no MTTA/MTTR
    assert (month["incidents"]["count"], month["incidents"]["mtta"]) == (0, None)
    assert month["incidents"]["mttr"] is None and month["incidents"]["sla_compliance"] is None

    mails = _mails(box)
    kinds = [m["Subject"] for m in mails]
    # Olga's page, Tina's notification; then the update and the resolved notice to both
    assert len(mails) == 6, kinds
    for msg in mails:
        assert msg["Subject"].startswith("DRILL: "), msg["Subject"]
        assert _body(msg).startswith(f"DRILL #{drill['id']}: an exercise"), _body(msg)
    assert "S1 Critical" in mails[0]["Subject"]

    m = done["measures"]
    figures = {i["name"]: (i["seconds"], i["target"], i["met"]) for i in m["items"]}
    assert figures == {
        "page": (60.0, 300.0, True),
        "acknowledge": (300.0, 900.0, True),
        "status_update": (2000.0, 1800.0, False),
        "mitigation": (900.0, 900.0, True),
        "resolution": (2300.0, 3600.0, True),
        "checklist": (None, None, True),
    }
    assert (done["status"], done["result"], m["met"], m["counted"]) == ("ended", "missed", 5, 6)
    assert m["missed"] == [
        "Time to first status update: 33 min 20 s, 3 min 20 s past the target of 30 min."
    ]
    text = report.markdown(done, "The database does not answer", settings.zone)
    assert "| Time to page | 60 s | 5 min | met |" in text
    assert "| Time to first status update | 33 min 20 s | 30 min | MISSED |" in text
    assert "5 of 6 targets met" in text
    page = report.html(done, "The database does not answer", settings.zone)
    assert '<td data-label="Figure">33 min 20 s</td>' in page and "<script" not in page


async def test_a_drill_is_left_out_of_every_real_statistic(
    store: Store, smtp: tuple[int, Mailbox]
) -> None:
    settings = _settings(store, smtp[0])
    t0 = local(2026, 12, 8, 14, 0)
    with store.begin() as conn:
        drill = drills.run(conn, settings, "database-down", t0, "mark")
        # a real failure of the same component meanwhile: its own incident, not the drill's
        real = alerts.process(conn, settings, probe_signal("db", "database", 1, t0 + 10), t0 + 10)
    assert real.incident_id not in (None, drill["incident_id"])
    with store.begin() as conn:
        incidents.acknowledge(conn, drill["incident_id"], "olga", t0 + 20)
        drills.end(conn, settings, drill["id"], "mark", t0 + 30)
        figures = monthly.report(conn, settings, "2026-12", t0 + 60)
        open_rows = incidents_data(conn, None, t0 + 60)["open_incidents"]
        state = status_report(conn, t0 + 60, settings.site)
    assert figures["incidents"]["count"] == 1
    assert [r["id"] for r in figures["incident_list"]] == [real.incident_id]
    assert figures["incidents"]["acknowledged"] == 0  # the drill's quick ack is not the MTTA
    assert [r["id"] for r in open_rows] == [real.incident_id]
    assert [i["id"] for i in state["incidents"]] == [real.incident_id]


def test_the_operations_manager_is_reminded_once_per_due_period(
    store: Store, smtp: tuple[int, Mailbox]
) -> None:
    settings = _settings(store, smtp[0])
    dec = local(2026, 12, 1, 9, 0)
    with store.begin() as conn:
        assert schedule.reminders(conn, settings, dec) == 2  # monthly and quarterly, to Mark
        assert schedule.reminders(conn, settings, dec + 3600) == 0
    with store.connect() as conn:
        rows = conn.execute(select(t.outbox).order_by(t.outbox.c.id)).mappings().all()
    assert [(r["contact"], r["kind"]) for r in rows] == [("mark", "drill_reminder")] * 2
    assert rows[0]["subject"] == "Drill due: monthly drill (30 min) for 2026-12"
    assert "No drill of this kind has been run yet." in rows[0]["body"]
    assert "nachtwacht drill run service-outage --schedule monthly" in rows[0]["body"]

    with store.begin() as conn:  # December's monthly drill is run and ended
        drill = drills.run(conn, settings, "service-outage", dec + 7200, "mark", kind="monthly")
        drills.end(conn, settings, drill["id"], "mark", dec + 9000)
    jan = local(2027, 1, 4, 9, 0)
    with store.begin() as conn:
        assert schedule.reminders(conn, settings, jan) == 2  # January's, and 2027-Q1's
        states = {s["name"]: s for s in schedule.status(conn, settings, jan)}
    assert states["monthly"]["due"] and not states["monthly"]["overdue"]
    with store.connect() as conn:
        last = conn.execute(
            select(t.outbox.c.body).where(t.outbox.c.subject.like("%monthly drill%2027-01"))
        ).scalar_one()
    assert f"Last drill: #{drill['id']} service-outage on 2026-12-01: missed" in last
    feb = local(2027, 2, 2, 9, 0)
    with store.begin() as conn:
        states = {s["name"]: s for s in schedule.status(conn, settings, feb)}
    assert states["monthly"]["overdue"]  # January was reminded and passed without a drill


def test_the_documented_drills_config_is_the_default() -> None:
    from pathlib import Path

    from nachtwacht.drills.models import DrillSettings

    doc = (Path(__file__).resolve().parent.parent / "docs" / "drills.md").read_text()
    block = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    shown = parse_config("site: x\n" + block, "drills.md").drills
    default = DrillSettings()
    for name, sched in default.schedules.items():
        assert shown.schedules[name].model_dump(exclude={"description"}) == sched.model_dump(
            exclude={"description"}
        )
    assert shown.model_dump(exclude={"schedules"}) == default.model_dump(exclude={"schedules"})


async def test_the_engine_module_ends_a_resolved_drill_and_reminds(
    sqlite_store: Store, smtp: tuple[int, Mailbox]
) -> None:
    from nachtwacht.engine.runtime import Runtime

    settings = _settings(sqlite_store, smtp[0])
    clock = FakeClock(local(2026, 12, 8, 14, 0))
    with sqlite_store.begin() as conn:
        drill = drills.run(conn, settings, "analytics-failure", clock.now(), "mark")
        escalation.resolve(conn, settings, drill["incident_id"], "olga", clock.now() + 60)
    runtime = Runtime.build(settings, sqlite_store, clock)
    try:
        assert runtime.engine.modules["drills"].interval == 60
        clock.advance(120)
        assert await runtime.engine.tick_once("drills")
    finally:
        await runtime.stop()
    with sqlite_store.connect() as conn:
        assert drills.require(conn, drill["id"])["status"] == "ended"
        kinds = conn.execute(select(t.outbox.c.kind, t.outbox.c.subject)).all()
    # the ad-hoc drill was December's monthly test: only the quarterly one is reminded
    assert [s for k, s in kinds if k == "drill_reminder"] == [
        "Drill due: quarterly drill (2 h) for 2026-Q4"
    ]


def test_every_channel_kind_and_every_message_kind_is_marked() -> None:
    from nachtwacht.notify.compose import compose
    from nachtwacht.notify.templates import KINDS

    settings = parse_config(
        """
site: x
people:
  contacts:
    - {id: olga, name: Olga, email: olga@example.org, phone: "+31600000001", chat: "@olga"}
notify:
  channels:
    mail: {kind: email}
    text: {kind: sms, url: "http://127.0.0.1:9/sms", max_length: 160}
    chat: {kind: slack, url: "http://127.0.0.1:9/hook"}
    hook: {kind: webhook, url: "http://127.0.0.1:9/hook"}
""",
        "x.yaml",
    )
    now = local(2026, 12, 8, 14, 0)
    incident = {
        "id": 7,
        "title": "database: DRILL db down",
        "severity": 1,
        "status": "investigating",
        "started_at": now - 60,
        "detected_at": now,
        "response_due_at": now + 900,
        "resolved_at": now + 1800,
        "ack_token": "tok",
        "drill_id": 3,
    }
    for kind in KINDS:
        messages = compose(
            settings,
            kind=kind,
            key=f"k-{kind}",
            incident=incident,
            contacts=settings.people.contacts,
            now=now,
        )
        assert {m.channel for m in messages} == {"mail", "text", "chat", "hook"}
        for m in messages:
            assert m.subject.startswith("DRILL: "), (kind, m.channel, m.subject)
            assert m.body.startswith("DRILL"), (kind, m.channel, m.body)
            assert m.payload["drill_id"] == 3
        real = compose(
            settings,
            kind=kind,
            key="r",
            incident={**incident, "drill_id": None},
            contacts=settings.people.contacts,
            now=now,
        )
        assert not any("DRILL #" in m.body or m.subject.startswith("DRILL") for m in real)


def test_a_forgotten_drill_ends_before_the_matrix_reaches_customers(sqlite_store: Store) -> None:
    settings = _settings(sqlite_store, closed_port())
    t0 = local(2026, 12, 8, 14, 0)
    with sqlite_store.begin() as conn:
        drill = drills.run(conn, settings, "security-incident", t0, "mark")
        assert drills.end_due(conn, settings, t0 + 3 * 3600 - 1) == []
        assert drills.end_due(conn, settings, t0 + 3 * 3600) == [drill["id"]]
        done = drills.require(conn, drill["id"])
        inc = incidents.require(conn, drill["incident_id"])
    assert (done["status"], done["result"], inc["status"]) == ("ended", "missed", "resolved")
    assert inc["resolved_at"] == t0 + 3 * 3600 < t0 + 4 * 3600  # the customer step's time
