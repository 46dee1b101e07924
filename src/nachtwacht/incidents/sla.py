"""The SLA clock: response targets by severity, in and out of business hours.

S1: 15 minutes, at any hour. S2: 1 hour when detected in business hours, 2 hours outside.
S3: 4 business hours when detected in business hours; outside, 4 business hours counted from
the start of the next business day ("next business day"). Business days, hours, holidays and
the timezone come from the config.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from nachtwacht.config.schema import BusinessHours

DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class BusinessCalendar:
    def __init__(self, hours: BusinessHours, zone: ZoneInfo) -> None:
        self.hours = hours
        self.zone = zone
        self._days = {DAYS.index(d) for d in hours.days}
        self._holidays = set(hours.holidays)

    def is_business_day(self, local: datetime) -> bool:
        return local.weekday() in self._days and local.date() not in self._holidays

    def in_business_hours(self, ts: float) -> bool:
        local = datetime.fromtimestamp(ts, self.zone)
        return self.is_business_day(local) and self.hours.start <= local.time() < self.hours.end

    def _open_close(self, local: datetime) -> tuple[datetime, datetime]:
        day = local.date()
        opens = datetime.combine(day, self.hours.start, self.zone)
        closes = datetime.combine(day, self.hours.end, self.zone)
        return opens, closes

    def next_opening(self, ts: float) -> float:
        """The start of business hours at or after `ts`."""
        local = datetime.fromtimestamp(ts, self.zone)
        for offset in range(0, 400):
            day = (local + timedelta(days=offset)).replace(hour=12, minute=0, second=0)
            if not self.is_business_day(day):
                continue
            opens, closes = self._open_close(day)
            if offset == 0 and local >= closes:
                continue
            return max(opens, local).timestamp() if offset == 0 else opens.timestamp()
        raise ValueError("no business day within 400 days; check business_hours")

    def add_business_time(self, ts: float, seconds: float) -> float:
        """`ts` plus `seconds` of business hours (time outside business hours does not count)."""
        current = self.next_opening(ts)
        remaining = seconds
        while True:
            local = datetime.fromtimestamp(current, self.zone)
            _, closes = self._open_close(local)
            available = closes.timestamp() - current
            if remaining <= available:
                return current + remaining
            remaining -= available
            current = self.next_opening(closes.timestamp() + 1)


def response_due(severity: int, detected_at: float, calendar: BusinessCalendar) -> float:
    if severity == 1:
        return detected_at + 15 * 60
    in_hours = calendar.in_business_hours(detected_at)
    if severity == 2:
        return detected_at + (3600 if in_hours else 2 * 3600)
    return calendar.add_business_time(detected_at, 4 * 3600)


def response_met(inc: dict[str, Any], now: float) -> bool | None:
    """Whether an incident's response target was met: True/False once decided, None while it
    waits, unacknowledged, inside its target.

    Met when acknowledged by `response_due_at`, or resolved by then (an incident over before
    anyone had to respond missed nothing); missed when acknowledged or resolved later, when it
    is still waiting past its target, or when the escalation recorded a breach (`breached_at`).
    """
    due = inc["response_due_at"]
    if inc["breached_at"] is not None:
        return False
    if inc["acknowledged_at"] is not None:
        return bool(inc["acknowledged_at"] <= due)
    if inc.get("resolved_at") is not None:
        return bool(inc["resolved_at"] <= due)
    if now > due:
        return False
    return None
