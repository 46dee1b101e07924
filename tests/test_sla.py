"""Response targets by severity, in and out of business hours, weekends and holidays."""

from __future__ import annotations

import pytest

from nachtwacht.config.loader import parse_config
from nachtwacht.incidents.service import calendar
from nachtwacht.incidents.sla import response_due
from tests.incident_fixtures import local

SETTINGS = parse_config("business_hours:\n  holidays: [2026-12-25, 2026-12-28]\nprobes: []\n")
CAL = calendar(SETTINGS)


@pytest.mark.parametrize(
    ("severity", "detected", "due"),
    [
        # S1: 15 minutes at any hour, Sunday night included
        (1, local(2026, 12, 6, 3, 0), local(2026, 12, 6, 3, 15)),
        # S2: 1 hour inside business hours, 2 hours outside
        (2, local(2026, 12, 2, 10, 0), local(2026, 12, 2, 11, 0)),
        (2, local(2026, 12, 2, 20, 0), local(2026, 12, 2, 22, 0)),
        (2, local(2026, 12, 5, 10, 0), local(2026, 12, 5, 12, 0)),  # a Saturday
        # S3: 4 business hours; across the evening to the next morning
        (3, local(2026, 12, 2, 10, 0), local(2026, 12, 2, 14, 0)),
        (3, local(2026, 12, 2, 16, 0), local(2026, 12, 3, 12, 0)),
        # S3 outside business hours: next business day (4 business hours from opening)
        (3, local(2026, 12, 2, 22, 0), local(2026, 12, 3, 13, 0)),
        # across a weekend: Friday 16:00 -> Monday 12:00
        (3, local(2026, 12, 4, 16, 0), local(2026, 12, 7, 12, 0)),
        # Saturday -> Monday 13:00
        (3, local(2026, 12, 5, 11, 0), local(2026, 12, 7, 13, 0)),
        # Christmas Eve 15:00 (Thu): 2h left that day, Fri 25th and Mon 28th are holidays
        (3, local(2026, 12, 24, 15, 0), local(2026, 12, 29, 11, 0)),
        # a holiday counts as outside business hours for S2 too
        (2, local(2026, 12, 25, 10, 0), local(2026, 12, 25, 12, 0)),
    ],
)
def test_response_due(severity: int, detected: float, due: float) -> None:
    assert response_due(severity, detected, CAL) == due


def test_business_hours_follow_the_configured_timezone_and_days() -> None:
    settings = parse_config(
        "timezone: America/New_York\nbusiness_hours: {days: [sun, mon], start: '08:00', "
        "end: '12:00'}\nprobes: []\n"
    )
    cal = calendar(settings)
    from datetime import datetime
    from zoneinfo import ZoneInfo

    ny = ZoneInfo("America/New_York")
    assert cal.in_business_hours(datetime(2026, 12, 6, 9, 0, tzinfo=ny).timestamp())  # Sunday
    assert not cal.in_business_hours(datetime(2026, 12, 8, 9, 0, tzinfo=ny).timestamp())  # Tue
