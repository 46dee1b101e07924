"""analyze_error_patterns on planted data with known answers, on every store backend."""

from __future__ import annotations

import math
import random
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update

from nachtwacht.analytics.models import PatternSettings
from nachtwacht.analytics.patterns import _trend, analyze_error_patterns, window_hours
from nachtwacht.analytics.stats import linear_fit, percentile, robust_scale
from nachtwacht.config.schema import BusinessHours
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.test_analytics_data import HOUR, add_hours, add_issue

NOW = 1_800_000_000.0 + 1800  # Friday 2027-01-15 08:30 UTC
AMS = ZoneInfo("Europe/Amsterdam")
NY = ZoneInfo("America/New_York")
FIRST, LAST = window_hours(NOW, 7)


def analyze(store: Store, days: int = 7, zone: ZoneInfo = AMS, **kw: object) -> dict:
    with store.connect() as conn:
        return analyze_error_patterns(conn, NOW, days, zone, BusinessHours(), **kw)  # type: ignore[arg-type]


def poisson(rng: random.Random, lam: float) -> int:
    # Knuth's method: plenty for λ = 20 and a few hundred draws
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        k += 1
        p *= rng.random()
        if p <= limit:
            return k - 1


def test_window_is_days_of_whole_hours_ending_with_the_current_one() -> None:
    assert LAST == 500_000 and LAST - FIRST + 1 == 7 * 24


def test_planted_rising_trend_slope_growth_and_totals(store: Store) -> None:
    # day i of the window has 10 + 5·i events, all in its 4th hour
    per_day = [10 + 5 * i for i in range(7)]
    with store.begin() as conn:
        issue = add_issue(conn, "boom", FIRST * HOUR - 86400, category="database", count=999)
        add_hours(conn, issue, {FIRST + 24 * i + 3: n for i, n in enumerate(per_day)})
    result = analyze(store)

    assert [d["count"] for d in result["daily"]] == per_day
    trend = result["trend"]
    assert trend["direction"] == "rising"
    assert trend["slope"] == pytest.approx(5.0)
    assert trend["mean"] == pytest.approx(25.0)
    assert trend["relative"] == pytest.approx(0.2)
    assert trend["r2"] == pytest.approx(1.0)
    assert result["totals"]["events"] == sum(per_day) == 175
    assert result["totals"]["per_day"] == pytest.approx(25.0)
    # halves of 84 hours: days 0-3 (their 4th hour is before hour 84) against days 4-6
    assert result["growth"] == {
        "first_half": 70,
        "second_half": 105,
        "growth": 0.5,
        "direction": "growing",
    }
    assert result["top_issues"][0]["count"] == 175 and result["top_issues"][0]["total"] == 999
    assert result["totals"]["new_issues"] == 0  # first seen before the window


def test_falling_and_stable_trends_against_the_relative_threshold() -> None:
    falling = _trend([40, 35, 30, 25, 20, 15, 10], 0.1)
    assert falling["direction"] == "falling" and falling["slope"] == pytest.approx(-5.0)
    # a slope of 1 per day on a mean of 100 is 1 %: below the 10 % threshold
    stable = _trend([97, 98, 99, 100, 101, 102, 103], 0.1)
    assert stable["direction"] == "stable" and stable["slope"] == pytest.approx(1.0)
    assert _trend([0] * 7, 0.1)["direction"] == "stable"


def test_peak_hour_follows_the_configured_timezone(store: Store) -> None:
    # one event every hour, plus 30 in the hour from 15:00 UTC on Wednesday 2027-01-13
    burst = int(datetime(2027, 1, 13, 15, tzinfo=ZoneInfo("UTC")).timestamp() // HOUR)
    counts = {h: 1 for h in range(FIRST, LAST + 1)}
    counts[burst] += 30
    with store.begin() as conn:
        add_hours(conn, add_issue(conn, "noise", FIRST * HOUR), counts)

    ny, ams = analyze(store, zone=NY), analyze(store, zone=AMS)
    assert ny["hourly"]["peak_hour"] == 10  # 15:00 UTC is 10:00 EST
    assert ams["hourly"]["peak_hour"] == 16  # and 16:00 CET
    assert ny["hourly"]["peak_count"] == 7 + 30 and sum(ny["hourly"]["by_hour"]) == 168 + 30

    # business hours (Mon-Fri 09-17) counted in local time: the burst is inside them in both
    for zone, result in ((NY, ny), (AMS, ams)):
        business_hours = sum(
            1
            for h in range(FIRST, LAST + 1)
            if (local := datetime.fromtimestamp(h * HOUR, zone)).weekday() < 5
            and 9 <= local.hour < 17
        )
        assert result["hourly"]["business"] == business_hours + 30
        assert result["hourly"]["off_hours"] == 168 - business_hours
        assert result["hourly"]["off_hours_per_hour"] == pytest.approx(1.0)


def test_spike_at_a_known_hour_and_none_in_flat_noise(store: Store) -> None:
    rng = random.Random(20270115)
    noise = {h: poisson(rng, 20) for h in range(FIRST, LAST + 1)}
    with store.begin() as conn:
        issue = add_issue(conn, "steady", FIRST * HOUR)
        add_hours(conn, issue, noise)
    quiet = analyze(store)
    assert quiet["spikes"] == []
    assert 18 <= quiet["spike_baseline"]["median"] <= 22

    spike_hour = FIRST + 100
    with store.begin() as conn:
        add_hours(conn, add_issue(conn, "burst", spike_hour * HOUR), {spike_hour: 100})
    loud = analyze(store)
    assert [s["hour"] for s in loud["spikes"]] == [spike_hour * HOUR]
    assert loud["spikes"][0]["count"] == noise[spike_hour] + 100
    assert loud["spikes"][0]["z"] > 10
    assert loud["growth"]["direction"] in ("growing", "steady", "shrinking")


def test_spike_threshold_and_minimum_count_are_configurable(store: Store) -> None:
    with store.begin() as conn:
        # a quiet system: one error, once, is not a spike; four at once is, without a minimum
        add_hours(conn, add_issue(conn, "rare", FIRST * HOUR), {FIRST + 50: 4})
    assert analyze(store)["spikes"] == []  # default minimum of 5 events
    loose = PatternSettings(spike_min_count=1)
    assert [s["count"] for s in analyze(store, cfg=loose)["spikes"]] == [4]
    strict = PatternSettings(spike_min_count=1, spike_z=10)
    assert analyze(store, cfg=strict)["spikes"] == []


def test_categories_top_new_recurring_and_environments(store: Store) -> None:
    with store.begin() as conn:
        db = add_issue(conn, "OperationalError", FIRST * HOUR - 3 * 86400, category="database")
        add_hours(conn, db, {FIRST + 24 * d + 5: 10 for d in range(7)})  # every day
        slow = add_issue(conn, "ReadTimeout", (FIRST + 24 * 5) * HOUR, category="timeout")
        add_hours(conn, slow, {FIRST + 24 * 5 + 1: 20, FIRST + 24 * 6 + 1: 25})  # two days: new
        perm = add_issue(conn, "PermissionError", FIRST * HOUR - 86400, category=None)
        add_hours(conn, perm, {FIRST + 2: 1, FIRST + 24 * 3 + 2: 1, FIRST + 24 * 6 + 2: 1})
        staging = add_issue(conn, "KeyError", FIRST * HOUR, environment="staging")
        add_hours(conn, staging, {FIRST + 10: 5})
        old = add_issue(conn, "gone", FIRST * HOUR - 30 * 86400)
        add_hours(conn, old, {FIRST - 5: 50})  # before the window: not counted

    result = analyze(store)
    assert result["totals"]["events"] == 70 + 45 + 3 + 5
    assert result["categories"] == {
        "database": 70,
        "timeout": 45,
        "uncategorised": 8,
    }
    assert [i["id"] for i in result["top_issues"]] == [db, slow, staging, perm]
    assert [i["id"] for i in result["new_issues"]] == [slow, staging]  # newest first
    assert result["totals"]["new_issues"] == 2
    recurring = {i["id"]: i["days_seen"] for i in result["recurring_issues"]}
    assert recurring == {db: 7, perm: 3}
    assert result["by_environment"] == {"production": 118, "staging": 5}

    production = analyze(store, environments=["production"])
    assert production["totals"]["events"] == 118
    assert staging not in [i["id"] for i in production["top_issues"]]
    assert [i["id"] for i in production["new_issues"]] == [slow]


def test_days_out_of_range_is_refused(sqlite_store: Store) -> None:
    with pytest.raises(ValueError, match="between 1 and 90"):
        analyze(sqlite_store, days=0)


def test_statistics_helpers_on_known_values() -> None:
    fit = linear_fit([0, 1, 2, 3], [1, 3, 5, 7])
    assert fit is not None and (fit.slope, fit.intercept, fit.r2) == (2.0, 1.0, 1.0)
    assert linear_fit([1, 1], [2, 3]) is None
    med, scale = robust_scale([10, 10, 10, 10, 100])
    assert med == 10 and scale == pytest.approx(math.sqrt(10))  # MAD 0: floored at √median
    assert percentile(list(range(1, 101)), 95) == pytest.approx(95.05)
    assert percentile([], 50) is None


def test_one_day_of_data_is_no_trend_and_says_how_many_days_it_needs(store: Store) -> None:
    # the project could report from 30 hours ago: one whole day of the 7-day window has data
    from tests.test_analytics_data import ensure_project

    with store.begin() as conn:
        ensure_project(conn, 1, NOW - 30 * HOUR)
        issue = add_issue(conn, "boom", NOW - 20 * HOUR)
        add_hours(conn, issue, {LAST - 5: 40, LAST - 2: 60})
    trend = analyze(store)["trend"]
    assert trend["direction"] == "unknown"  # not "rising" from six empty days and one busy one
    assert trend["days"] == 1 and trend["min_days"] == 3 and trend["slope"] is None
    assert trend["message"] == "not enough data: a trend needs 3 days of data, there is 1"
    # from the third day with data on, it is a trend again (the line through those days only)
    with store.begin() as conn:
        conn.execute(update(t.error_projects).values(created_at=(FIRST + 4 * 24) * HOUR - 60))
        add_hours(conn, issue, {FIRST + 4 * 24 + 3: 20, FIRST + 5 * 24 + 3: 50})
    trend = analyze(store)["trend"]
    assert trend["days"] == 3 and trend["first_day"] == 4
    assert trend["direction"] == "rising" and trend["slope"] == pytest.approx(40.0)
