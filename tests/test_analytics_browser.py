"""The Analytics page in Debian's Chromium against a real `nachtwacht serve`: the three uPlot
charts draw from the page's data, without script errors."""

from __future__ import annotations

import re
import time

import pytest

from nachtwacht.store.db import Store
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
from tests.test_analytics_data import HOUR, add_hours, add_issue

need_browser(module_level=True)
from playwright.sync_api import Page, expect  # noqa: E402 - only once we know it is there

# a Chromium and a live serve per module: two modules at once starve each other on 2 cores
pytestmark = pytest.mark.serial


def test_analytics_page_draws_its_charts(
    page: Page, live_server: LiveServer, shot: Screenshots
) -> None:
    store = Store(f"sqlite:///{live_server.config.parent / 'nachtwacht.db'}")
    now = time.time()
    last = int(now // HOUR)
    with store.begin() as conn:
        issue = add_issue(conn, "OperationalError: gone away", now - 8 * 86400, category="database")
        add_hours(
            conn, issue, {last - 167 + k: 1 + k // 24 + (40 if k == 150 else 0) for k in range(168)}
        )
    store.dispose()

    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto("/login")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.locator("form:has(input[name=password]) [type=submit]").click()
    page.goto("/analytics")
    for chart in ("#chart-daily", "#chart-hours", "#chart-series"):
        expect(page.locator(f"{chart} canvas")).to_be_visible()
    expect(page.locator("#trend")).to_have_attribute("data-direction", "rising")
    expect(page.locator("#spikes")).to_contain_text("47")  # the planted hour: 7 + 40 events
    expect(page.locator("#chart-status")).to_contain_text("Drag across")
    # the time axes read as the rest of the pages: 24-hour clock, ISO dates (time.js)
    hourly = page.locator("#chart-series").get_attribute("data-ticks") or ""
    assert hourly and not re.search(r"am|pm", hourly, re.I)
    assert all(re.fullmatch(r"\d\d:\d\d(\n\d{4}-\d\d-\d\d)?", t) for t in hourly.split("|"))
    days = page.locator("#chart-daily").get_attribute("data-ticks") or ""
    assert days and all(re.fullmatch(r"\d\d-\d\d(\n\d{4})?", t) for t in days.split("|"))
    shot(page, "analytics")
    assert errors == []
