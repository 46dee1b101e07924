"""The alert pipeline and the escalation matrix, by fast-forwarding the clock."""

from __future__ import annotations

import pytest

from nachtwacht.alerts import service as alerts
from nachtwacht.alerts.maintenance import alert_muted_by
from nachtwacht.clock import FakeClock
from nachtwacht.incidents import escalation, service
from nachtwacht.store.db import Store
from tests.incident_fixtures import deliver, events, local, outbox, probe_signal, site

# a Wednesday night, 03:00 in Amsterdam: outside business hours
NIGHT = local(2026, 12, 2, 3, 0)


def _fire(store: Store, settings, sig, now: float) -> alerts.Outcome:  # noqa: ANN001
    with store.begin() as conn:
        return alerts.process(conn, settings, sig, now)


def _tick(store: Store, settings, now: float) -> int:  # noqa: ANN001
    total = 0
    with store.connect() as conn:
        due = escalation.due_incidents(conn, now)
    for incident_id in due:
        with store.begin() as conn:
            total += escalation.advance(conn, settings, incident_id, now, alert_muted_by)
    return total


def _recipients(rows: list[dict], kind: str | None = None) -> set[str]:
    return {r["contact"] or r["channel"] for r in rows if kind is None or r["kind"] == kind}


def test_a_confirmed_failure_pages_the_oncall_engineer_at_once(store: Store) -> None:
    settings = site(store)
    out = _fire(store, settings, probe_signal("db", "database", 1, NIGHT), NIGHT)
    assert out.action == "opened" and out.incident_id is not None and out.muted_by is None
    rows = outbox(store)
    assert {r["kind"] for r in rows} == {"emergency_alert"}
    assert _recipients(rows) == {"olga", "chat"}  # the on-call engineer and the team chat
    assert {r["address"] for r in rows if r["contact"] == "olga"} == {"olga@example.org"}
    with store.connect() as conn:
        inc = service.require(conn, out.incident_id)
    assert inc["severity"] == 1 and inc["status"] == "investigating"
    assert inc["response_due_at"] == NIGHT + 15 * 60
    assert inc["started_at"] == NIGHT - 60  # the first failing result, for the review
    kinds = [k for k, _ in events(store, out.incident_id)]
    assert kinds[:4] == ["detected", "alert", "escalated", "notification_queued"]


def test_the_same_failure_again_is_deduplicated(store: Store) -> None:
    settings = site(store)
    first = _fire(store, settings, probe_signal("db", "database", 1, NIGHT), NIGHT)
    again = _fire(store, settings, probe_signal("db", "database", 1, NIGHT + 30), NIGHT + 30)
    assert again.action == "deduplicated" and again.alert_id == first.alert_id
    assert len(outbox(store)) == 2  # nobody paged twice


def test_alerts_of_one_component_are_one_incident(store: Store) -> None:
    settings = site(store)
    first = _fire(store, settings, probe_signal("db-replica", "database", 2, NIGHT), NIGHT)
    second = _fire(store, settings, probe_signal("db", "database", 1, NIGHT + 20), NIGHT + 20)
    assert second.incident_id == first.incident_id
    with store.connect() as conn:
        inc = service.require(conn, first.incident_id)
        assert len(service.alerts_of(conn, first.incident_id)) == 2
    assert inc["severity"] == 1  # raised by the more severe alert, on the timeline
    assert any(k == "severity" for k, _ in events(store, first.incident_id))


def test_s1_escalates_through_the_whole_matrix_by_elapsed_time(store: Store) -> None:
    settings = site(store)
    clock = FakeClock(NIGHT)
    inc_id = _fire(store, settings, probe_signal("db", "database", 1, NIGHT), NIGHT).incident_id
    assert inc_id is not None

    clock.advance(5 * 60)
    _tick(store, settings, clock.now())  # page 2: not acknowledged yet
    assert len([r for r in outbox(store) if r["idempotency_key"].startswith(f"inc{inc_id}:page2")])

    clock.advance(1)
    with store.begin() as conn:
        service.acknowledge(conn, inc_id, "olga", clock.now())
    clock.advance(5 * 60)  # 10 min: acknowledged, so no third page
    _tick(store, settings, clock.now())
    assert not [r for r in outbox(store) if ":page3:" in r["idempotency_key"]]

    clock.set(NIGHT + 15 * 60)
    _tick(store, settings, clock.now())
    assert "tina" in _recipients(outbox(store), "emergency_notification")  # 15 min: tech lead

    clock.set(NIGHT + 30 * 60)
    _tick(store, settings, clock.now())
    assert "mark" in _recipients(outbox(store), "emergency_notification")  # 30 min: management

    clock.set(NIGHT + 3600)
    _tick(store, settings, clock.now())  # 1 h: external support on the incident
    ext = [m for k, m in events(store, inc_id) if k == "external_support"]
    assert ext and "Hostco" in ext[0] and "+31201234567" in ext[0] and "AC-42" in ext[0]
    assert "MariaDB Support" in ext[0]

    clock.set(NIGHT + 2 * 3600)
    _tick(store, settings, clock.now())
    assert "eve" in _recipients(outbox(store), "emergency_notification")  # 2 h: executives

    clock.set(NIGHT + 4 * 3600)
    _tick(store, settings, clock.now())  # 4 h: customers and stakeholders, consider DR
    assert _recipients(outbox(store), "customer_notice")
    prompt = [m for k, m in events(store, inc_id) if k == "customer_communication"]
    assert prompt and "disaster recovery" in prompt[0]

    steps = [m for k, m in events(store, inc_id) if k == "escalated" and "page" not in m]
    assert len(steps) == 6  # every step of the matrix exactly once
    clock.advance(3600)
    assert _tick(store, settings, clock.now()) >= 0
    assert len([m for k, m in events(store, inc_id) if k == "escalated" and "page" not in m]) == 6


def test_unanswered_pages_go_to_the_backup(store: Store) -> None:
    settings = site(store)
    inc_id = _fire(store, settings, probe_signal("db", "database", 1, NIGHT), NIGHT).incident_id
    for minutes in (5, 10):
        _tick(store, settings, NIGHT + minutes * 60)
    page3 = [r for r in outbox(store) if ":page3:" in r["idempotency_key"]]
    assert page3, "third page was not sent"
    assert any("backup" in m for k, m in events(store, inc_id) if k == "escalated")


def test_missed_response_target_is_a_breach_and_escalates(store: Store) -> None:
    settings = site(store)
    inc_id = _fire(store, settings, probe_signal("db", "database", 1, NIGHT), NIGHT).incident_id
    _tick(store, settings, NIGHT + 15 * 60 + 1)
    with store.connect() as conn:
        inc = service.require(conn, inc_id)
    assert inc["breached_at"] == NIGHT + 15 * 60 + 1
    breach = [m for k, m in events(store, inc_id) if k == "breach"]
    assert len(breach) == 1 and "response target missed" in breach[0]
    _tick(store, settings, NIGHT + 16 * 60)
    assert len([1 for k, _ in events(store, inc_id) if k == "breach"]) == 1


def test_acknowledged_in_time_is_no_breach(store: Store) -> None:
    settings = site(store)
    inc_id = _fire(store, settings, probe_signal("db", "database", 1, NIGHT), NIGHT).incident_id
    with store.begin() as conn:
        service.acknowledge(conn, inc_id, "olga", NIGHT + 14 * 60)
    _tick(store, settings, NIGHT + 20 * 60)
    with store.connect() as conn:
        assert service.require(conn, inc_id)["breached_at"] is None


def test_a_failing_dependency_inhibits_paging_for_its_dependents(store: Store) -> None:
    settings = site(store)
    db = _fire(store, settings, probe_signal("db", "database", 1, NIGHT), NIGHT)
    pages = len(outbox(store))
    app = _fire(
        store, settings, probe_signal("app", "web", 2, NIGHT + 10, inhibited_by="db"), NIGHT + 10
    )
    assert app.muted_by == "inhibited:db"
    assert app.incident_id == db.incident_id  # recorded on the outage that caused it
    assert len(outbox(store)) == pages


def test_recovery_resolves_and_sends_the_resolved_notice_to_those_paged(store: Store) -> None:
    settings = site(store)
    inc_id = _fire(store, settings, probe_signal("db", "database", 1, NIGHT), NIGHT).incident_id
    deliver(store, NIGHT + 1)
    out = _fire(
        store, settings, probe_signal("db", "database", 1, NIGHT + 600, firing=False), NIGHT + 600
    )
    assert out.action == "resolved"
    with store.connect() as conn:
        inc = service.require(conn, inc_id)
    assert inc["status"] == "resolved" and inc["resolved_at"] == NIGHT + 600
    assert _recipients(outbox(store), "resolved") == {"olga", "chat"}
    _tick(store, settings, NIGHT + 3600)  # resolved: no more escalation
    assert not _recipients(outbox(store), "emergency_notification")


def test_maintenance_records_but_does_not_page(store: Store) -> None:
    settings = site(
        store,
        "maintenance:\n  - {name: db-upgrade, start: 2026-12-02T02:00:00, "
        "end: 2026-12-02T04:00:00, components: [database]}\n",
    )
    out = _fire(store, settings, probe_signal("db", "database", 1, NIGHT), NIGHT)
    assert out.muted_by == "maintenance:db-upgrade"
    assert outbox(store) == []
    _tick(store, settings, NIGHT + 1800)
    assert outbox(store) == []
    recovered = probe_signal("db", "database", 1, NIGHT + 2400, firing=False)
    _fire(store, settings, recovered, NIGHT + 2400)
    assert outbox(store) == []  # it never paged, so no resolved notice either


def test_paging_starts_when_the_window_ends_and_the_failure_goes_on(store: Store) -> None:
    settings = site(
        store,
        "maintenance:\n  - {name: db-upgrade, start: 2026-12-02T02:00:00, "
        "end: 2026-12-02T04:00:00, components: [database]}\n",
    )
    inc_id = _fire(store, settings, probe_signal("db", "database", 1, NIGHT), NIGHT).incident_id
    _tick(store, settings, NIGHT + 1800)
    assert outbox(store) == []
    _tick(store, settings, local(2026, 12, 2, 4, 0, 5))
    assert "olga" in _recipients(outbox(store), "emergency_alert")
    assert any("paging resumed" in m for k, m in events(store, inc_id) if k == "note")


def test_an_incident_that_paged_still_sends_its_resolved_notice_in_maintenance(
    store: Store,
) -> None:
    settings = site(
        store,
        "maintenance:\n  - {name: late-fix, start: 2026-12-02T03:10:00, "
        "end: 2026-12-02T05:00:00}\n",
    )
    inc_id = _fire(store, settings, probe_signal("db", "database", 1, NIGHT), NIGHT).incident_id
    deliver(store, NIGHT + 1)
    _fire(
        store, settings, probe_signal("db", "database", 1, NIGHT + 1200, firing=False), NIGHT + 1200
    )
    assert _recipients(outbox(store), "resolved")
    with store.connect() as conn:
        assert service.require(conn, inc_id)["status"] == "resolved"


def test_two_processes_never_fire_the_same_step_twice(store: Store) -> None:
    settings = site(store)
    inc_id = _fire(store, settings, probe_signal("db", "database", 1, NIGHT), NIGHT).incident_id
    now = NIGHT + 15 * 60
    with store.begin() as conn:
        first = escalation.advance(conn, settings, inc_id, now, alert_muted_by)
    with store.begin() as conn:
        second = escalation.advance(conn, settings, inc_id, now, alert_muted_by)
    assert first > 0 and second == 0


def test_overdue_status_update_reminds_the_commander(store: Store) -> None:
    settings = site(store)
    inc_id = _fire(store, settings, probe_signal("db", "database", 1, NIGHT), NIGHT).incident_id
    deliver(store, NIGHT + 1)
    with store.begin() as conn:
        service.acknowledge(conn, inc_id, "olga", NIGHT + 60)
        service.assign(conn, inc_id, "tina", "commander", "olga", NIGHT + 60)
    _tick(store, settings, NIGHT + 30 * 60 + 1)  # S1: an update every 30 minutes
    reminders = [r for r in outbox(store) if r["kind"] == "reminder"]
    assert {r["contact"] for r in reminders if r["contact"]} == {"tina"}
    with store.begin() as conn:
        escalation.post_update(conn, settings, inc_id, "tina", NIGHT + 31 * 60, "replica promoted")
    assert _recipients(outbox(store), "status_update") >= {"olga", "tina"}
    _tick(store, settings, NIGHT + 45 * 60)
    assert len([r for r in outbox(store) if r["kind"] == "reminder"]) == len(reminders)


def test_declared_incident_pages_and_can_be_escalated_by_hand(store: Store) -> None:
    settings = site(store)
    with store.begin() as conn:
        inc_id = service.open_incident(
            conn, settings, title="Data loss suspected", severity=1, now=NIGHT, origin="declared"
        )
        escalation.advance(conn, settings, inc_id, NIGHT, alert_muted_by)
        escalation.escalate_now(
            conn, settings, inc_id, "olga", NIGHT + 60, "restart failed 3 times"
        )
    assert "tina" in _recipients(outbox(store), "emergency_notification")
    msgs = [m for k, m in events(store, inc_id) if k == "escalated"]
    assert any("restart failed 3 times" in m for m in msgs)


@pytest.mark.parametrize("status", ["mitigating", "monitoring"])
def test_status_changes_record_mitigation_time(store: Store, status: str) -> None:
    settings = site(store)
    inc_id = _fire(store, settings, probe_signal("db", "database", 1, NIGHT), NIGHT).incident_id
    with store.begin() as conn:
        service.set_status(conn, inc_id, status, "olga", NIGHT + 600)
        with pytest.raises(service.IncidentError):
            service.set_status(conn, inc_id, "closed", "olga", NIGHT + 700)
    with store.connect() as conn:
        assert service.require(conn, inc_id)["mitigated_at"] == NIGHT + 600


def test_a_repeat_page_says_which_page_and_a_missed_target_says_missed(
    sqlite_store: Store,
) -> None:
    settings = site(sqlite_store)
    _fire(sqlite_store, settings, probe_signal("db", "database", 1, NIGHT), NIGHT)
    deliver(sqlite_store, NIGHT)
    _tick(sqlite_store, settings, NIGHT + 5 * 60)
    [page2] = [r for r in outbox(sqlite_store) if ":page2:" in r["idempotency_key"]][:1]
    assert "Page 2: not acknowledged yet." in page2["body"]
    assert "MISSED" not in page2["body"]
    _tick(sqlite_store, settings, NIGHT + 15 * 60 + 1)
    late = [r for r in outbox(sqlite_store) if r["kind"] == "emergency_alert"][-1]
    assert "MISSED, nobody has acknowledged yet" in late["body"]
