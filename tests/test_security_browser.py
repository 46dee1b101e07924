"""The Security page in Debian's Chromium against a real `nachtwacht serve`, at laptop and phone
size, with a realistic week: hundreds of attacking addresses (long IPv6 ones among them), long
scanner paths, blocks, a likely compromise with its incident, and a detector that fell behind."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import insert

from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.browser_fixtures import (  # noqa: F401 - the *_fixture functions are fixtures
    ARTIFACTS,
    EXPECT_TIMEOUT_MS,
    PASSWORD,
    LiveServer,
    browser_fixture,
    live_server_fixture,
    need_browser,
)
from tests.test_security_report import day

need_browser(module_level=True)
from playwright.sync_api import Browser, Page, expect  # noqa: E402 - only once we know it is there

pytestmark = pytest.mark.serial  # Chromium and a real serve: one at a time

SIZES = {"laptop": (1280, 900), "phone": (390, 844)}
LONG_PATH = "/api/method/frappe.desk.search.search_link?" + "txt=%27%20OR%201%3D1--&" * 12
LONG_USER = "administrator-" + "x" * 150


def _address(i: int) -> str:
    return (
        f"2001:0db8:85a3:{i:04x}:0000:8a2e:0370:{i:04x}"
        if i % 2
        else f"198.51.{i // 250}.{i % 250}"
    )


@pytest.fixture(name="seeded", scope="module")
def seeded_fixture(live_server: LiveServer) -> dict[str, Any]:
    with live_server.api("responder") as api:
        made = api.post(
            "/api/v1/incidents", json={"title": "Likely compromise: admin login", "severity": 1}
        )
        assert made.status_code == 201, made.text
        incident = made.json()["id"]
    store = Store(f"sqlite:///{live_server.config.parent / 'nachtwacht.db'}")
    now = time.time()  # the server reads the real clock; the rows sit well inside its window
    try:
        with store.begin() as conn:
            for i in range(300):
                at = now - 3600 - i * 600
                rule = ("scanner_404", "probe_paths", "failed_login")[i % 3]
                conn.execute(
                    insert(t.alerts).values(
                        fingerprint=f"security:{rule}:{_address(i)}",
                        source="security",
                        title=f"{rule}: {_address(i)}",
                        component="security",
                        severity=2 if rule == "failed_login" else 3,
                        status="firing",
                        started_at=at,
                        fired_at=at,
                        last_seen=at,
                    )
                )
                conn.execute(
                    insert(t.security_tallies).values(
                        day=day(at), kind="not_found", key=_address(i), n=20 + i, last_ts=at
                    )
                )
                conn.execute(
                    insert(t.security_tallies).values(
                        day=day(at), kind="probe_path", key=f"{LONG_PATH}&n={i}", n=3, last_ts=at
                    )
                )
            conn.execute(
                insert(t.alerts).values(
                    fingerprint="security:brute_force_success:203.0.113.5",
                    source="security",
                    title="likely compromise: login after failures: 203.0.113.5",
                    component="security",
                    severity=1,
                    status="firing",
                    started_at=now - 600,
                    fired_at=now - 600,
                    last_seen=now - 600,
                    incident_id=incident,
                )
            )
            conn.execute(
                insert(t.security_tallies).values(
                    day=day(now), kind="failed_login", key=f"user:{LONG_USER}", n=40, last_ts=now
                )
            )
            for i in range(60):
                conn.execute(
                    insert(t.security_blocks).values(
                        address=_address(i),
                        reason=f"finding scanner_404 for {_address(i)} {LONG_PATH}",
                        created_by="alice",
                        created_at=now - 3000 + i,
                        expires_at=now + 86400,
                        state="active",
                        incident_id=incident if i == 0 else None,
                    )
                )
            # the detector's last good tick was ten minutes ago: it fell behind its log
            conn.execute(
                insert(t.module_health).values(
                    module="security",
                    instance="elsewhere:1",
                    last_tick=now - 30,
                    last_ok=now - 600,
                    last_error="SecurityLogError: /var/log/nginx/access.log: permission denied",
                    last_error_at=now - 30,
                    consecutive_errors=20,
                )
            )
    finally:
        store.dispose()
    return {"incident": incident}


def _log_in(page: Page) -> None:
    page.goto("/login")
    page.fill("input[name=username]", "vera")  # a viewer
    page.fill("input[name=password]", PASSWORD)
    page.locator("form:has(input[name=password]) [type=submit]").click()
    expect(page.locator("#status-grid")).to_be_visible()


def _sideways(page: Page) -> list[str]:
    """The innermost elements reaching past the right edge, if the page scrolls sideways."""
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    if scroll <= inner:
        return []
    return page.evaluate(
        """() => [...document.querySelectorAll("body *")]
          .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 0.5)
          .slice(-5).map((el) => el.tagName + "." + el.className)"""
    )


@pytest.mark.parametrize("size", list(SIZES))
def test_the_security_page_fits_and_shows_the_report_to_a_viewer(
    browser: Browser, live_server: LiveServer, seeded: dict[str, Any], size: str
) -> None:
    width, height = SIZES[size]
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": width, "height": height}
    )
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        page = context.new_page()
        _log_in(page)
        if size == "laptop":  # the keyboard way: g then x
            page.keyboard.press("g")
            page.keyboard.press("x")
        else:
            page.locator('nav a[href="/security"]').click()
        expect(page).to_have_url(f"{live_server.url}/security")
        expect(page.locator("h1")).to_contain_text("last 7 days")
        if size == "laptop":  # nine entries in the nav and the user still fit one row
            bar = page.locator(".topbar").bounding_box()
            assert bar is not None and bar["height"] < 70, bar
        # the detector that fell behind says so, at the top and in its section
        expect(page.locator("#behind")).to_contain_text("BEHIND")
        expect(page.locator("#behind")).to_contain_text("permission denied")
        expect(page.locator("#health-state")).to_contain_text("BEHIND")
        expect(page.locator('[data-figure="blocks"]')).to_have_text("60")
        expect(page.locator("#top-addresses tbody tr")).to_have_count(20)
        expect(page.locator("#failed-accounts")).to_contain_text("administrator-xxx")
        page.screenshot(path=str(ARTIFACTS / f"security-{size}.png"), full_page=True)
        page.screenshot(path=str(ARTIFACTS / f"security-{size}-top.png"))
        page.locator("#top-addresses").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / f"security-{size}-addresses.png"))
        assert _sideways(page) == [], f"scrolls sideways at {size}"

        page.select_option("#s-days", "30")
        page.locator("form.filters [type=submit]").click()
        expect(page.locator("h1")).to_contain_text("last 30 days")
        assert "days=30" in page.url
        assert _sideways(page) == [], f"scrolls sideways at {size} (30 days)"

        link = page.locator(f'#findings a[href="/incidents/{seeded["incident"]}"]').first
        expect(link).to_be_visible()
        link.click()
        expect(page.locator("h1")).to_contain_text("Likely compromise")
    finally:
        context.close()
