"""S1, S2 and S3 through the clock: breaches land on the SLA deadline, in and out of business
hours, across a weekend and a holiday; escalation steps follow elapsed time regardless."""

from __future__ import annotations

import pytest

from nachtwacht.alerts import service as alerts
from nachtwacht.alerts.maintenance import alert_muted_by
from nachtwacht.incidents import escalation, service
from nachtwacht.store.db import Store
from tests.incident_fixtures import events, local, outbox, probe_signal, site

HOLIDAYS = "business_hours:\n  holidays: [2026-12-25, 2026-12-28]\n"


def _tick(store: Store, settings, *moments: float) -> None:  # noqa: ANN001
    for now in moments:
        with store.connect() as conn:
            due = escalation.due_incidents(conn, now)
        for incident_id in due:
            with store.begin() as conn:
                escalation.advance(conn, settings, incident_id, now, alert_muted_by)


def _run_until(store: Store, settings, start: float, end: float, step: float) -> None:  # noqa: ANN001
    _tick(store, settings, *range(int(start), int(end) + 1, int(step)))


@pytest.mark.parametrize(
    ("severity", "detected", "breach"),
    [
        (1, local(2026, 12, 5, 23, 50), local(2026, 12, 6, 0, 5)),  # Saturday night
        (2, local(2026, 12, 2, 10, 0), local(2026, 12, 2, 11, 0)),  # Wednesday morning
        (2, local(2026, 12, 2, 19, 0), local(2026, 12, 2, 21, 0)),  # Wednesday evening
        (3, local(2026, 12, 4, 15, 0), local(2026, 12, 7, 11, 0)),  # Friday afternoon → Monday
        (3, local(2026, 12, 24, 16, 30), local(2026, 12, 29, 12, 30)),  # Christmas, holidays
    ],
)
def test_unacknowledged_incident_breaches_at_its_deadline(
    sqlite_store: Store, severity: int, detected: float, breach: float
) -> None:
    settings = site(sqlite_store, HOLIDAYS)
    with sqlite_store.begin() as conn:
        out = alerts.process(
            conn, settings, probe_signal("db", "database", severity, detected), detected
        )
    _tick(sqlite_store, settings, breach - 1)
    with sqlite_store.connect() as conn:
        assert service.require(conn, out.incident_id)["breached_at"] is None
    _tick(sqlite_store, settings, breach + 1, breach + 61)
    with sqlite_store.connect() as conn:
        inc = service.require(conn, out.incident_id)
    assert inc["response_due_at"] == breach
    assert inc["breached_at"] == breach + 1
    assert [k for k, _ in events(sqlite_store, out.incident_id)].count("breach") == 1


@pytest.mark.parametrize("severity", [1, 2, 3])
def test_every_severity_follows_the_matrix_by_elapsed_time_even_when_acknowledged(
    sqlite_store: Store, severity: int
) -> None:
    settings = site(sqlite_store, HOLIDAYS)
    detected = local(2026, 12, 2, 10, 0)
    with sqlite_store.begin() as conn:
        inc_id = alerts.process(
            conn, settings, probe_signal("db", "database", severity, detected), detected
        ).incident_id
        service.acknowledge(conn, inc_id, "olga", detected + 120)
    _run_until(sqlite_store, settings, detected, detected + 4 * 3600 + 60, step=300)
    steps = [
        m for k, m in events(sqlite_store, inc_id) if k == "escalated" and not m.startswith("page")
    ]
    assert len(steps) == 6
    notified = {
        r["contact"]
        for r in outbox(sqlite_store)
        if r["kind"] == "emergency_notification" and r["contact"]
    }
    assert notified == {"tina", "mark", "eve"}
    assert not [r for r in outbox(sqlite_store) if ":page2:" in r["idempotency_key"]]


def test_a_policy_per_severity_replaces_the_matrix(sqlite_store: Store) -> None:
    settings = site(
        sqlite_store,
        "incidents:\n  policies:\n    quiet:\n      steps:\n"
        "        - {after: 0m, notify: [oncall]}\n"
        "        - {after: 8h, notify: ['role:technical_lead']}\n"
        "  severity_policy: {3: quiet}\n",
    )
    detected = local(2026, 12, 2, 22, 0)
    with sqlite_store.begin() as conn:
        inc_id = alerts.process(
            conn, settings, probe_signal("db-replica", "database", 3, detected), detected
        ).incident_id
    _run_until(sqlite_store, settings, detected, detected + 4 * 3600, step=300)
    assert {r["contact"] for r in outbox(sqlite_store) if r["contact"]} == {"olga"}
    with sqlite_store.connect() as conn:
        assert service.require(conn, inc_id)["policy"] == "quiet"
