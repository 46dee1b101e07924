"""The confirm page of a contact verification link on a phone, in Chromium against a real
`nachtwacht serve`: opened, it shows what is confirmed and a thumb-sized button and confirms
nothing; pressed, it confirms; a wrong link says so."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from nachtwacht.oncall import verify
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.browser_fixtures import (  # noqa: F401 - the *_fixture functions are fixtures
    EXPECT_TIMEOUT_MS,
    LiveServer,
    Screenshots,
    browser_fixture,
    live_server_fixture,
    need_browser,
    shot_fixture,
)

need_browser(module_level=True)
from playwright.sync_api import Browser, expect  # noqa: E402 - only once we know it is there

pytestmark = pytest.mark.serial

PHONE = {"width": 390, "height": 844}
TOKEN = "a-test-token-of-the-browser-check-0123456789"


def _store(server: LiveServer) -> Store:
    return Store(f"sqlite:///{server.config.parent / 'nachtwacht.db'}")


def _status(server: LiveServer) -> str:
    store = _store(server)
    try:
        with store.connect() as conn:
            return str(conn.execute(select(t.contact_verifications.c.status)).scalar_one())
    finally:
        store.dispose()


def test_the_confirm_link_on_a_phone_confirms_on_the_button_only(
    browser: Browser, live_server: LiveServer, shot: Screenshots
) -> None:
    store = _store(live_server)
    now = time.time()
    try:
        with store.begin() as conn:  # as `contacts verify` leaves it; the token is the link's
            conn.execute(
                t.contact_verifications.insert().values(
                    contact="tina",
                    channel="sms",
                    address="+31 6 2345 6789",
                    token_hash=verify.token_hash(TOKEN),
                    status="sent",
                    reason="manual",
                    created_at=now,
                    expires_at=now + 86400,
                )
            )
    finally:
        store.dispose()
    context = browser.new_context(base_url=live_server.url, viewport=PHONE)
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto(f"/verify/{TOKEN}")
        expect(page.locator("h1")).to_have_text("Confirm this channel reaches you")
        expect(page.locator("main")).to_contain_text("+31 6 2345 6789")
        button = page.locator("#verify-button")
        box = button.bounding_box()
        assert box is not None and box["y"] + box["height"] <= PHONE["height"]
        assert box["width"] >= PHONE["width"] * 0.8  # a thumb-sized button
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert _status(live_server) == "sent"  # opening the link confirmed nothing
        shot(page, "phone-verify-link")
        button.click()
        expect(page.locator("#verify-done")).to_contain_text("Confirmed")
        assert _status(live_server) == "confirmed"
        page.goto("/verify/not-a-real-token")
        expect(page.locator("#verify-error")).to_contain_text("unknown or expired link")
    finally:
        context.close()
