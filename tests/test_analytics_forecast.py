"""Forecasts on planted data: a disk filling at a known rate, rising latency and error rates."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import update

from nachtwacht.analytics.forecast import disk_forecast, forecast
from nachtwacht.analytics.models import ForecastSettings
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.test_analytics_data import (
    HOUR,
    add_hours,
    add_issue,
    add_minute_rollups,
    add_probe,
    add_results,
    ensure_project,
)

NOW = 1_800_000_000.0 + 1800
CFG = ForecastSettings()
DISK = {"metric": "disk", "mount": "/"}


def filling(start_used: float, rate_per_hour: float, seed: int, hours: float = 6.0) -> list:
    """One sample a minute over `hours` up to NOW, used % growing at `rate_per_hour`, noisy."""
    rng = random.Random(seed)
    n = int(hours * 60)
    return [
        (NOW - (n - k) * 60, start_used + rate_per_hour * (k * 60) / HOUR + rng.gauss(0, 0.2), None)
        for k in range(1, n + 1)
    ]


def test_disk_filling_at_a_known_rate_gives_hours_to_full(store: Store) -> None:
    with store.begin() as conn:
        root = add_probe(conn, "root-disk", "host", "host", DISK)
        data = add_probe(conn, "data-disk", "host", "host", {"metric": "disk", "mount": "/data"})
        add_probe(conn, "memory", "host", "host", {"metric": "memory"})  # not a disk
        add_results(conn, root, filling(50.0, 2.0, seed=1))  # 62 % used now: 38 points left
        add_results(conn, data, filling(70.0, 0.0, seed=2))  # flat
    with store.connect() as conn:
        result = forecast(conn, NOW, CFG)
    disks = {d["name"]: d for d in result["disk"]}
    assert set(disks) == {"root-disk", "data-disk"}

    root_fc = disks["root-disk"]
    assert root_fc["status"] == "filling"
    assert root_fc["hours_to_full"] == pytest.approx(19.0, abs=0.5)  # 38 points at 2 per hour
    assert root_fc["fill_rate"] == pytest.approx(2.0, abs=0.05)
    assert root_fc["full_at"] == pytest.approx(NOW + 19 * HOUR, abs=0.5 * HOUR)
    assert root_fc["confidence"]["level"] == "high"
    assert root_fc["confidence"]["r2"] > 0.99 and root_fc["confidence"]["points"] == 360

    flat = disks["data-disk"]
    # noise only: whatever the sign of the slope, the fit explains nothing and no date is near
    assert flat["confidence"]["r2"] < CFG.min_r2
    assert flat["status"] == "stable" or flat["hours_to_full"] > 1000


def test_disk_forecast_without_enough_data_says_so() -> None:
    few = [(NOW - 120, 50.0), (NOW - 60, 51.0), (NOW, 52.0)]
    result = disk_forecast(few, NOW, CFG)
    assert result["status"] == "insufficient" and result["hours_to_full"] is None
    assert result["message"].startswith("not enough data: 3 points")
    assert result["confidence"]["level"] == "none"
    short = [(NOW - k * 10, 50.0 + k) for k in range(10)]  # ten points within 90 seconds
    assert "span" in disk_forecast(short, NOW, CFG)["message"]
    full = disk_forecast([(NOW - k * 600, 100.0) for k in range(10)], NOW, CFG)
    assert full["status"] == "full" and full["hours_to_full"] == 0.0


def test_latency_failure_and_error_rate_trends_from_rollups(store: Store) -> None:
    first = int(NOW // HOUR) - 24
    with store.begin() as conn:
        api = add_probe(conn, "api", "http", "web")
        flaky = add_probe(conn, "flaky", "tcp", "web")
        # one minute bucket per hour is enough: trends group the minutes by hour
        add_minute_rollups(
            conn, api, {(first + k) * 60: (60, 60, 60 * (100.0 + 10 * k)) for k in range(24)}
        )
        add_minute_rollups(
            conn, flaky, {(first + k) * 60: (50, 50 - k, 50 * 20.0) for k in range(24)}
        )
        issue = add_issue(conn, "rising", first * HOUR)
        add_hours(conn, issue, {first + k: 5 + 2 * k for k in range(24)})
    with store.connect() as conn:
        result = forecast(conn, NOW, CFG)

    trends = {p["probe"]: p for p in result["probes"]}
    lat = trends["api"]["latency_ms"]
    assert lat["direction"] == "rising"
    assert lat["slope_per_hour"] == pytest.approx(10.0)
    assert lat["confidence"]["r2"] == pytest.approx(1.0) and lat["confidence"]["points"] == 24
    assert trends["api"]["failure_percent"]["direction"] == "stable"

    fail = trends["flaky"]["failure_percent"]
    assert fail["direction"] == "rising" and fail["slope_per_hour"] == pytest.approx(2.0)
    assert trends["flaky"]["latency_ms"]["direction"] == "stable"

    errors = result["errors"]
    assert errors["direction"] == "rising"
    assert errors["slope_per_hour"] == pytest.approx(2.0)
    assert errors["now"] == pytest.approx(53.0)  # the line 5 + 2k extended to now (k = 24)
    assert errors["next_24h"] == 1848  # Σ (53 + 2·(h + ½)) for h in 0..23


def test_trends_with_too_little_history_are_not_guessed(store: Store) -> None:
    first = int(NOW // HOUR) - 2
    with store.begin() as conn:
        api = add_probe(conn, "api", "http", "web")
        add_minute_rollups(conn, api, {(first + k) * 60: (60, 60, 6000.0) for k in range(2)})
    with store.connect() as conn:
        result = forecast(conn, NOW, CFG)
    [api_trend] = result["probes"]
    assert api_trend["latency_ms"]["direction"] == "unknown"
    assert api_trend["latency_ms"]["message"].startswith("not enough data")
    # no project has ever been able to report: no data, not a flat zero
    assert result["errors"]["direction"] == "unknown"
    with store.begin() as conn:
        ensure_project(conn, 1, NOW - 2 * 86400)
    with store.connect() as conn:
        result = forecast(conn, NOW, CFG)
    # a project for two days and no errors at all is 24 hours of zero: a known, flat rate
    assert result["errors"]["direction"] == "stable" and result["errors"]["now"] == 0
    with store.begin() as conn:
        conn.execute(update(t.error_projects).values(created_at=NOW - 7200))
    with store.connect() as conn:
        result = forecast(conn, NOW, CFG)
    # added two hours ago: one whole hour since, which is not a trend
    assert result["errors"]["direction"] == "unknown"
