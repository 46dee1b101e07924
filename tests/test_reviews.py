"""Reviews on every store backend: downtime from state changes, the review's fields,
follow-ups, the deadline and follow-up reminders on a fast-forwarded clock, the monthly report."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select, update

from nachtwacht.clock import FakeClock
from nachtwacht.config.schema import Settings
from nachtwacht.incidents import service as incidents
from nachtwacht.probes import service as probes
from nachtwacht.probes.rollups import HOUR_KEY
from nachtwacht.reviews import followups, monthly, reminders, service
from nachtwacht.reviews.downtime import downtime
from nachtwacht.reviews.service import ReviewError
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.helpers import settings_for

AMS = ZoneInfo("Europe/Amsterdam")
DAY = 86400.0
SITE = """
site: review-test
people:
  contacts:
    - {id: olga, name: Olga Oncall, roles: [oncall_engineer], email: olga@example.org}
    - {id: tina, name: Tina Techlead, roles: [technical_lead], email: tina@example.org}
notify:
  channels:
    mail: {kind: email, host: 127.0.0.1, port: 2525, starttls: false}
probes:
  - {name: a, kind: tcp, host: 127.0.0.1, port: 1, component: x}
  - {name: b, kind: tcp, host: 127.0.0.1, port: 1, component: x}
  - {name: c, kind: tcp, host: 127.0.0.1, port: 1, component: y}
  - {name: d, kind: tcp, host: 127.0.0.1, port: 1, component: z}
  - {name: e, kind: tcp, host: 127.0.0.1, port: 1, component: w}
"""


def local(*args: int) -> float:
    return datetime(*args, tzinfo=AMS).timestamp()


@pytest.fixture
def settings(store: Store) -> Settings:
    return settings_for(SITE, store.url)


def _change(
    conn, pid: int, ts: float, old: str, new: str, first_failure: float | None = None
) -> None:  # noqa: ANN001
    conn.execute(
        insert(t.state_changes).values(
            probe_id=pid,
            ts=ts,
            from_state=old,
            to_state=new,
            status=2 if new == "critical" else 0,
            first_failure=first_failure,
        )
    )


def test_downtime_per_component_is_the_union_of_critical_time_in_the_window(
    store: Store, settings: Settings, clock: FakeClock
) -> None:
    w = clock.now()
    with store.begin() as conn:
        ids = probes.sync_probes(conn, settings.probes, w - 3600)
        a, b, c, d, e = (ids[n] for n in "abcde")
        _change(conn, a, w + 100, "pending", "critical", w + 40)  # down from its first failure
        _change(conn, a, w + 300, "critical", "ok")
        _change(conn, b, w + 200, "ok", "critical", w + 200)
        _change(conn, b, w + 500, "critical", "ok")
        _change(conn, c, w + 600, "ok", "pending", w + 600)  # pending is not down yet
        _change(conn, c, w + 700, "pending", "critical", w + 600)  # still down at the end
        _change(conn, d, w - 500, "ok", "critical", w - 560)  # down before the window opened
        _change(conn, d, w + 800, "critical", "warning")  # a warning is not down
        _change(conn, e, w - 500, "ok", "critical", w - 560)
        _change(conn, e, w - 100, "critical", "ok")  # recovered before the window
    with store.connect() as conn:
        found = {d["component"]: d for d in downtime(conn, w, w + 1000, ["q"])}
    assert {k: v["seconds"] for k, v in found.items()} == {"x": 460, "y": 400, "z": 800, "q": 0}
    assert {p["probe"]: p["seconds"] for p in found["x"]["probes"]} == {"a": 260, "b": 300}
    assert found["x"]["intervals"] == [(w + 40, w + 500)]


def test_review_fields_are_set_cleared_and_recorded(
    store: Store, settings: Settings, clock: FakeClock
) -> None:
    now = clock.now()
    with store.begin() as conn:
        inc = incidents.open_incident(conn, settings, title="db down", severity=1, now=now)
        got = service.set_fields(conn, inc, {"root_cause": " disk full "}, "olga", now + 10)
        assert got["root_cause"] == "disk full" and got["lessons"] is None
        got = service.set_fields(
            conn, inc, {"impact": "checkout down 25 min", "root_cause": None}, "tina", now + 20
        )
        assert (got["root_cause"], got["impact"], got["updated_by"]) == (
            "disk full",
            "checkout down 25 min",
            "tina",
        )
        got = service.set_fields(conn, inc, {"root_cause": ""}, "tina", now + 30)
        assert got["root_cause"] is None
        events = [
            (e["actor"], e["message"])
            for e in incidents.timeline(conn, inc)
            if e["kind"] == "postmortem"
        ]
    assert events == [
        ("olga", "review updated: root cause"),
        ("tina", "review updated: impact"),
        ("tina", "review updated: root cause"),
    ]
    with pytest.raises(ReviewError) as nothing, store.begin() as conn:
        service.set_fields(conn, inc, {"root_cause": None}, "olga", now)
    assert nothing.value.http_status == 422
    with pytest.raises(ReviewError) as unknown, store.begin() as conn:
        service.set_fields(conn, inc, {"cause": "x"}, "olga", now)
    assert unknown.value.field == "cause"
    with pytest.raises(incidents.IncidentError) as missing, store.begin() as conn:
        service.set_fields(conn, 999, {"root_cause": "x"}, "olga", now)
    assert missing.value.http_status == 404


def test_followups_need_a_known_owner_and_are_done_once(
    store: Store, settings: Settings, clock: FakeClock
) -> None:
    now = clock.now()
    with store.begin() as conn:
        inc = incidents.open_incident(conn, settings, title="db down", severity=1, now=now)
        with pytest.raises(ReviewError) as owner:
            followups.add(
                conn,
                settings,
                inc,
                title="add disk alert",
                owner="bob",
                due_at=now,
                actor="o",
                now=now,
            )
        assert owner.value.field == "owner" and "olga, tina" in str(owner.value)
        first = followups.add(
            conn,
            settings,
            inc,
            title="add a disk alert",
            owner="olga",
            due_at=now + DAY,
            actor="tina",
            now=now,
        )
        followups.add(
            conn,
            settings,
            inc,
            title="document the restore",
            owner="tina",
            due_at=now + 2 * DAY,
            actor="tina",
            now=now,
        )
        followups.complete(conn, first["id"], "olga", now + 60)
        with pytest.raises(ReviewError) as again:
            followups.complete(conn, first["id"], "olga", now + 60)
        assert again.value.http_status == 409
        still_open = followups.list_followups(conn, now, "open")
        every = followups.list_followups(conn, now + 3 * DAY, "all", inc)
        messages = [e["message"] for e in incidents.timeline(conn, inc) if e["kind"] == "followup"]
    assert [f["title"] for f in still_open] == ["document the restore"]
    assert [(f["status"], f["overdue"]) for f in every] == [("done", False), ("open", True)]
    assert messages[0].startswith(f"improvement action #{first['id']} for Olga Oncall, due ")
    assert messages[-1] == f"improvement action #{first['id']} done: add a disk alert"


def test_due_dates_are_days_date_times_or_durations() -> None:
    now = local(2027, 1, 15, 10, 0)
    assert service.parse_due("2027-01-31", now, AMS) == local(2027, 1, 31, 9, 0)
    assert service.parse_due("2027-01-31T17:30", now, AMS) == local(2027, 1, 31, 17, 30)
    assert (
        service.parse_due("2027-01-31T17:30:00Z", now, AMS)
        == datetime.fromisoformat("2027-01-31T17:30:00+00:00").timestamp()
    )
    assert service.parse_due("7d", now, AMS) == now + 7 * DAY
    with pytest.raises(ReviewError) as bad:
        service.parse_due("next week", now, AMS)
    assert bad.value.field == "due"


# -- reminders -----------------------------------------------------------------------------------


def _resolved(store: Store, settings: Settings, at: float, severity: int = 1) -> int:
    with store.begin() as conn:
        inc = incidents.open_incident(
            conn, settings, title="db down", severity=severity, now=at - 3600, commander="tina"
        )
        incidents.set_status(conn, inc, "resolved", "olga", at)
    return inc


def _tick(store: Store, settings: Settings, at: float) -> int:
    with store.begin() as conn:
        return reminders.tick(conn, settings, at)


def _reminders(store: Store, kind: str) -> list[tuple[str, str]]:
    o = t.outbox.c
    with store.connect() as conn:
        rows = conn.execute(
            select(o.idempotency_key, o.contact).where(o.kind == kind).order_by(o.id)
        ).all()
    return [(k, c) for k, c in rows]


def test_review_deadlines_remind_the_commander_at_24_hours_and_1_week_once(
    store: Store, settings: Settings, clock: FakeClock
) -> None:
    r = clock.now()
    inc = _resolved(store, settings, r)
    minor = _resolved(store, settings, r, severity=3)  # S3 owes no formal review by default
    closed = _resolved(store, settings, r)
    with store.begin() as conn:  # closed "after the review is done"
        incidents.set_status(conn, closed, "closed", "tina", r + 3600)
    assert _tick(store, settings, r + DAY - 1) == 0
    assert _tick(store, settings, r + DAY) == 1
    assert _tick(store, settings, r + DAY + 60) == 0
    assert _tick(store, settings, r + 6 * DAY) == 0
    assert _reminders(store, "review_reminder") == [(f"review:{inc}:analysis:mail:tina", "tina")]
    assert _tick(store, settings, r + 7 * DAY) == 1
    assert _tick(store, settings, r + 7 * DAY + 3600) == 0
    assert _reminders(store, "review_reminder")[-1] == (f"review:{inc}:review:mail:tina", "tina")
    with store.connect() as conn:
        subjects = (
            conn.execute(select(t.outbox.c.subject).where(t.outbox.c.kind == "review_reminder"))
            .scalars()
            .all()
        )
        stages = [
            e["data"]["stage"]
            for e in incidents.timeline(conn, inc)
            if e["kind"] == "review_reminder"
        ]
        quiet = [e for e in incidents.timeline(conn, minor) if e["kind"] == "review_reminder"]
    assert subjects == [
        f"REMINDER - #{inc} - immediate analysis overdue",
        f"REMINDER - #{inc} - formal post-incident review overdue",
    ]
    assert stages == ["analysis", "review"] and quiet == []


def test_filled_in_fields_skip_their_reminder(
    store: Store, settings: Settings, clock: FakeClock
) -> None:
    r = clock.now()
    inc = _resolved(store, settings, r)
    with store.begin() as conn:
        service.set_fields(
            conn, inc, {"root_cause": "disk full", "impact": "25 min down"}, "olga", r + 3600
        )
    assert _tick(store, settings, r + DAY) == 0
    with store.begin() as conn:
        service.set_fields(conn, inc, {"lessons": "alert on disk"}, "tina", r + 5 * DAY)
    assert _tick(store, settings, r + 7 * DAY) == 0
    assert _reminders(store, "review_reminder") == []


def test_an_overdue_followup_reminds_its_owner_daily_until_done(
    store: Store, settings: Settings, clock: FakeClock
) -> None:
    now = clock.now()
    due = now + 2 * DAY
    with store.begin() as conn:
        inc = incidents.open_incident(conn, settings, title="db down", severity=3, now=now)
        action = followups.add(
            conn,
            settings,
            inc,
            title="add a disk alert",
            owner="olga",
            due_at=due,
            actor="tina",
            now=now,
        )
    assert _tick(store, settings, due - 1) == 0
    assert _tick(store, settings, due) == 1
    assert _tick(store, settings, due + 3600) == 0
    assert _tick(store, settings, due + DAY - 1) == 0
    assert _tick(store, settings, due + DAY) == 1
    with store.begin() as conn:
        followups.complete(conn, action["id"], "olga", due + DAY + 60)
    assert _tick(store, settings, due + 2 * DAY) == 0
    assert _reminders(store, "followup_reminder") == [
        (f"followup:{action['id']}:0:mail:olga", "olga"),
        (f"followup:{action['id']}:1:mail:olga", "olga"),
    ]


async def test_the_engine_module_sends_the_reminders(sqlite_store: Store, clock: FakeClock) -> None:
    from nachtwacht.engine.runtime import Runtime

    settings = settings_for(SITE, sqlite_store.url)
    inc = _resolved(sqlite_store, settings, clock.now())
    runtime = Runtime.build(settings, sqlite_store, clock)
    try:
        assert runtime.engine.modules["reviews"].interval == 60
        clock.advance(DAY)
        assert await runtime.engine.tick_once("reviews")
        assert _reminders(sqlite_store, "review_reminder") == [
            (f"review:{inc}:analysis:mail:tina", "tina")
        ]
    finally:
        await runtime.stop()


# -- the monthly report ----------------------------------------------------------------------------


def _incident(
    conn, settings: Settings, at: float, severity: int, ack: float | None, fixed: float | None
) -> int:  # noqa: ANN001
    inc = incidents.open_incident(
        conn, settings, title=f"S{severity} at {at}", severity=severity, now=at, origin="declared"
    )
    if ack is not None:
        incidents.acknowledge(conn, inc, "olga", at + ack)
    if fixed is not None:
        incidents.set_status(conn, inc, "resolved", "olga", at + fixed)
    return inc


def _rollup(conn, table, pid: int, bucket: int, n: int, ok: int, **extra: int) -> None:  # noqa: ANN001
    conn.execute(
        insert(table).values(
            probe_id=pid,
            bucket=bucket,
            n=n,
            n_ok=ok,
            n_warning=0,
            n_critical=n - ok,
            n_unknown=0,
            **extra,
        )
    )


def test_monthly_report_figures_on_known_incidents(store: Store, clock: FakeClock) -> None:
    settings = settings_for(
        SITE.replace("component: x}", "component: web}", 2).replace(
            "component: y}", "component: database}"
        ),
        store.url,
    )
    now = local(2027, 2, 10, 12, 0)
    clock.set(now)
    with store.begin() as conn:
        ids = probes.sync_probes(conn, settings.probes, local(2026, 12, 1))
        _incident(conn, settings, local(2027, 1, 3, 10, 0), 1, 300, 3600)
        _incident(conn, settings, local(2027, 1, 5, 2, 0), 1, 1200, 7200)  # acknowledged late
        _incident(conn, settings, local(2027, 1, 13, 10, 0), 2, 1800, None)
        _incident(conn, settings, local(2027, 1, 12, 10, 0), 3, None, None)  # never answered
        _incident(conn, settings, local(2027, 1, 31, 23, 30), 3, None, None)  # last half hour
        _incident(conn, settings, local(2026, 12, 20, 10, 0), 2, 60, 120)  # December
        _incident(conn, settings, local(2027, 2, 1, 0, 30), 1, 60, 120)  # February

        hour = int(local(2027, 1, 10, 1, 0) // 3600)
        _rollup(conn, t.rollup_hour, ids["a"], hour, 100, 99)
        _rollup(conn, t.rollup_hour, ids["b"], hour, 100, 100)
        _rollup(conn, t.rollup_hour, ids["c"], hour, 50, 40)
        _rollup(conn, t.rollup_hour, ids["c"], int(local(2026, 12, 15) // 3600), 100, 0)
        mark = int(local(2027, 1, 20, 1, 0) // 3600)
        store.set_meta(conn, HOUR_KEY, mark, now)
        for when, n, ok in (
            (local(2027, 1, 25, 12, 0), 10, 10),  # after the hour watermark: counted
            (local(2027, 1, 12, 12, 0), 1000, 0),  # already in the hours: not again
            (local(2027, 2, 2, 12, 0), 1000, 0),  # February
        ):
            minute = int(when // 60)
            _rollup(conn, t.rollup_minute, ids["c"], minute, n, ok, hour=minute // 60)

        project = conn.execute(
            insert(t.error_projects).values(
                name="shop", public_key="k" * 32, created_by="t", created_at=now, disabled=False
            )
        ).inserted_primary_key[0]
        issue_ids = []
        for title in ("KeyError: cart", "Timeout: payment", "Feb only"):
            issue_ids.append(
                conn.execute(
                    insert(t.error_issues).values(
                        project_id=project,
                        fingerprint=title.ljust(64, "0")[:64],
                        fingerprint_version=1,
                        title=title,
                        level="error",
                        status="unresolved",
                        first_seen=now,
                        last_seen=now,
                        count=0,
                    )
                ).inserted_primary_key[0]
            )
        for issue, when, n in (
            (0, local(2027, 1, 4, 10), 10),
            (0, local(2027, 1, 20, 10), 20),
            (1, local(2027, 1, 8, 10), 50),
            (1, local(2026, 12, 8, 10), 100),
            (2, local(2027, 2, 8, 10), 500),
        ):
            conn.execute(
                insert(t.error_issue_hours).values(
                    issue_id=issue_ids[issue], hour=int(when // 3600), n=n
                )
            )
        inc = incidents.list_incidents(conn, None)[-1]["id"]
        late = followups.add(
            conn,
            settings,
            inc,
            title="disk alert",
            owner="olga",
            due_at=local(2027, 1, 20, 9),
            actor="t",
            now=now,
        )
        done = followups.add(
            conn,
            settings,
            inc,
            title="runbook",
            owner="tina",
            due_at=local(2027, 1, 25, 9),
            actor="t",
            now=now,
        )
        followups.complete(conn, done["id"], "tina", now)

    with store.connect() as conn:
        report = monthly.report(conn, settings, "2027-01", now)
        past = monthly.history(conn, settings, "2027-01", now, months=3)

    assert report["month"] == "2027-01"
    overall = report["incidents"]
    assert (overall["count"], overall["acknowledged"], overall["resolved"]) == (5, 3, 2)
    assert overall["mtta"] == 1100 and overall["mttr"] == 5400
    assert (overall["sla_met"], overall["sla_decided"], overall["sla_compliance"]) == (2, 5, 0.4)
    assert {s: f["count"] for s, f in report["by_severity"].items()} == {"1": 2, "2": 1, "3": 2}
    s1 = report["by_severity"]["1"]
    assert (s1["mtta"], s1["mttr"], s1["sla_compliance"]) == (750, 5400, 0.5)
    uptime = {u["component"]: u for u in report["uptime"]}
    assert uptime["web"]["uptime"] == 0.995 and uptime["web"]["probes"] == 2
    assert uptime["database"]["uptime"] == round(50 / 60, 6)
    assert [(i["title"], i["events"]) for i in report["top_issues"]] == [
        ("Timeout: payment", 50),
        ("KeyError: cart", 30),
    ]
    assert [(f["id"], f["overdue"]) for f in report["open_followups"]] == [(late["id"], True)]
    assert [(m["month"], m["count"]) for m in past] == [
        ("2026-11", 0),
        ("2026-12", 1),
        ("2027-01", 5),
    ]
    with pytest.raises(ReviewError), store.connect() as conn:
        monthly.report(conn, settings, "2027-13", now)


def test_followup_reminded_at_is_claimed_once_per_period(
    sqlite_store: Store, clock: FakeClock
) -> None:
    """Two engines ticking at once: the conditional update lets one of them remind."""
    settings = settings_for(SITE, sqlite_store.url)
    now = clock.now()
    with sqlite_store.begin() as conn:
        inc = incidents.open_incident(conn, settings, title="x", severity=3, now=now)
        action = followups.add(
            conn, settings, inc, title="disk alert", owner="olga", due_at=now, actor="t", now=now
        )
        # as if another engine had just reminded in this period
        conn.execute(
            update(t.followups).where(t.followups.c.id == action["id"]).values(reminded_at=now)
        )
    assert _tick(sqlite_store, settings, now + 60) == 0


def test_an_incident_resolved_before_its_response_deadline_met_it(
    store: Store, clock: FakeClock
) -> None:
    settings = settings_for(SITE, store.url)
    now = local(2027, 2, 10, 12, 0)
    clock.set(now)
    with store.begin() as conn:
        # an S1 that resolved itself after 60 s: nobody had to respond, nothing was missed
        _incident(conn, settings, local(2027, 1, 3, 3, 0), 1, None, 60)
        # an S1 resolved after 20 minutes without an acknowledgement: the 15 minutes passed
        _incident(conn, settings, local(2027, 1, 4, 3, 0), 1, None, 20 * 60)
    with store.connect() as conn:
        report = monthly.report(conn, settings, "2027-01", now)
    overall = report["incidents"]
    assert (overall["sla_met"], overall["sla_decided"], overall["sla_compliance"]) == (1, 2, 0.5)
    assert [i["sla_met"] for i in sorted(report["incident_list"], key=lambda i: i["id"])] == [
        True,
        False,
    ]
