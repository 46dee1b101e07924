"""The probe chart in Debian's Chromium against a real `nachtwacht serve`, in its first hour: one
bucket or none spans the range asked for (not years), and the axis reads 24-hour times in the
site's timezone, as the rest of the pages do.

The chart's data is answered by the test (Playwright routes the rollups request), so what it
draws does not wait for the engine's first rollup.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.browser_fixtures import (  # noqa: F401 - the *_fixture functions are fixtures
    PASSWORD,
    LiveServer,
    Screenshots,
    browser_fixture,
    context_fixture,
    live_server_fixture,
    need_browser,
    page_fixture,
    shot_fixture,
)

need_browser(module_level=True)
from playwright.sync_api import Page, Route, expect  # noqa: E402 - only once we know it is there

pytestmark = pytest.mark.serial

ZONE = ZoneInfo("Europe/Amsterdam")  # the live server's site timezone (the default)


def _log_in(page: Page) -> None:
    page.goto("/login")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.locator("form:has(input[name=password]) [type=submit]").click()


def _answer(page: Page, rows_for: object) -> None:
    def handle(route: Route) -> None:
        query = dict(p.split("=", 1) for p in route.request.url.split("?", 1)[1].split("&"))
        until = int(query["until"])
        rows = rows_for(until)  # type: ignore[operator]
        route.fulfill(status=200, content_type="application/json", body=json.dumps(rows))

    page.route(re.compile(r".*/api/v1/probes/[^/]+/rollups\?.*"), handle)


def _bucket(ts: int) -> dict:
    minute = ts - ts % 60
    return {
        "ts": minute,
        "bucket": minute // 60,
        "n": 60,
        "n_ok": 60,
        "latency_avg": 1.5,
        "latency_max": 3.0,
        "availability": 1.0,
        "value_max": None,
    }


@pytest.mark.parametrize("buckets", [0, 1])
def test_first_hour_chart_spans_the_range_and_reads_24_hour_site_time(
    page: Page, live_server: LiveServer, shot: Screenshots, buckets: int
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _log_in(page)
    _answer(page, lambda until: [_bucket(until - 120)] if buckets else [])
    page.goto("/probes/db-port")
    chart = page.locator("#chart")
    expect(chart.locator("canvas")).to_be_visible()
    expect(chart).to_have_attribute("data-x-max", re.compile(r"\d"))
    x_min = float(chart.get_attribute("data-x-min") or "nan")
    x_max = float(chart.get_attribute("data-x-max") or "nan")
    # the 24 hours asked for, not Feb 2027 to Aug 2029 around one point
    assert 86400 - 5 <= x_max - x_min <= 86400 + 5
    shot(page, f"chart-{buckets}-buckets")

    ticks = (chart.get_attribute("data-ticks") or "").split("|")
    times = [float(t) for t in (chart.get_attribute("data-tick-times") or "").split("|")]
    assert len(ticks) == len(times) >= 3
    for label, ts in zip(ticks, times, strict=True):
        local = datetime.fromtimestamp(ts, ZONE)
        first, *date = label.split("\n")
        assert first == local.strftime("%H:%M"), (label, local)
        assert date in ([], [local.strftime("%Y-%m-%d")])
        assert not re.search(r"am|pm", label, re.I)
    assert any(int(label[:2]) >= 13 for label in ticks)  # a day of ticks: the 24-hour clock
    assert errors == []
