"""The dashboard in Debian's Chromium, driven by Playwright, against a real `nachtwacht serve`.

Every wait is Playwright's auto-waiting `expect` (bounded by EXPECT_TIMEOUT_MS); nothing sleeps.
Each step leaves a screenshot in test-artifacts/.
"""

from __future__ import annotations

import re

import pytest

from tests.browser_fixtures import (  # noqa: F401 - the *_fixture functions are fixtures
    EXPECT_TIMEOUT_MS,
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
from playwright.sync_api import Browser, Locator, Page, expect  # noqa: E402 - only once we know it is there

# a Chromium and a live serve per module: two modules at once starve each other on 2 cores
pytestmark = pytest.mark.serial

PHONE = {"width": 390, "height": 844}


def _log_in(page: Page, username: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.locator("form:has(input[name=password]) [type=submit]").click()


def test_login_page_shows_a_form_with_username_and_password(page: Page, shot: Screenshots) -> None:
    response = page.goto("/login")
    assert response is not None and response.status == 200
    expect(page.locator("input[name=username]")).to_be_visible()
    expect(page.locator("input[name=password]")).to_have_attribute("type", "password")
    shot(page, "login-form")


def test_anonymous_visit_to_overview_is_sent_to_login(page: Page, shot: Screenshots) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))
    expect(page.locator("input[name=password]")).to_be_visible()
    shot(page, "redirected-to-login")


def _no_reload_marker(page: Page) -> None:
    """Mark this document: a navigation or reload would replace it and lose the mark."""
    page.evaluate("window.__nachtwachtNoReload = true")


def _still_same_document(page: Page) -> bool:
    return page.evaluate("window.__nachtwachtNoReload === true")


def test_probe_turns_critical_live_and_responder_acknowledges_from_incident_page(
    page: Page, live_server: LiveServer, shot: Screenshots
) -> None:
    _log_in(page, "alice")
    expect(page).to_have_url(f"{live_server.url}/")
    cell = page.locator('#status-grid [data-probe="db-port"]')
    # up first: the probe checks every second against a socket the test holds open
    expect(cell).to_have_attribute("data-state", "ok")
    expect(page.locator('#status-grid [data-probe="web-port"]')).to_have_attribute(
        "data-state", "ok"
    )
    shot(page, "overview-all-ok")
    _no_reload_marker(page)

    live_server.stop_target("db-port")
    # the grid polls every 5 s; the probe fails within a second of the socket closing
    expect(cell).to_have_attribute("data-state", "critical")
    assert _still_same_document(page), "the overview was reloaded instead of updating itself"
    expect(page.locator('#status-grid [data-probe="web-port"]')).to_have_attribute(
        "data-state", "ok"
    )
    shot(page, "overview-db-critical")

    incident = page.locator("#incidents [data-incident]").filter(has_text="db").first
    expect(incident).to_be_visible()
    shot(page, "overview-open-incident")
    incident.locator("a").first.click()
    expect(page).to_have_url(re.compile(r"/incidents/\d+$"))
    incident_id = int(page.url.rsplit("/", 1)[1])
    ack = page.locator("#ack-button")
    expect(ack).to_be_visible()
    shot(page, "incident-before-ack")

    ack.click()
    expect(page).to_have_url(re.compile(rf"/incidents/{incident_id}(#timeline)?$"))
    expect(page.locator('#timeline [data-kind="acknowledged"]')).to_contain_text("alice")
    expect(page.locator("#acknowledged")).to_contain_text("alice")
    expect(page.locator("#ack-button")).to_have_count(0)
    shot(page, "incident-acknowledged")
    with live_server.api("viewer") as api:
        stored = api.get(f"/api/v1/incidents/{incident_id}").json()
    assert stored["acknowledged_by"] == "alice"


def test_viewer_sees_no_ack_button_and_cannot_acknowledge(
    page: Page, live_server: LiveServer, shot: Screenshots
) -> None:
    with live_server.api("admin") as api:
        made = api.post(
            "/api/v1/incidents",
            json={"title": "Checkout is slow", "severity": 3, "component": "web"},
        )
        assert made.status_code == 201, made.text
    incident_id = made.json()["id"]

    _log_in(page, "vera")
    expect(page).to_have_url(f"{live_server.url}/")
    page.goto(f"/incidents/{incident_id}")
    expect(page.locator("body")).to_contain_text("Checkout is slow")
    expect(page.locator("#ack-button")).to_have_count(0)
    shot(page, "viewer-incident-page")

    # no button is not enough: the server must refuse the viewer's own session, with a valid
    # CSRF token, through the page's form route and through the API
    csrf = page.request.get("/api/v1/me").json()["csrf_token"]
    form_post = page.request.post(
        f"/incidents/{incident_id}/ack", form={"csrf_token": csrf}, max_redirects=0
    )
    assert form_post.status == 403, form_post.text()
    assert "responder" in form_post.text()
    api_post = page.request.post(
        f"/api/v1/incidents/{incident_id}/ack", headers={"X-CSRF-Token": csrf}, data={}
    )
    assert api_post.status == 403, api_post.text()
    assert "responder" in api_post.json()["detail"]
    with live_server.api("viewer") as api:
        assert api.get(f"/api/v1/incidents/{incident_id}").json()["acknowledged_by"] is None


def test_five_wrong_passwords_lock_the_account_even_for_the_right_one(
    page: Page, live_server: LiveServer, shot: Screenshots
) -> None:
    for attempt in range(1, 6):
        _log_in(page, "lockme", "not the password")
        # the fifth wrong password is the one that locks the account
        reason = "locked" if attempt == 5 else "wrong"
        expect(page).to_have_url(re.compile(rf"/login\?(.*&)?error={reason}"))
        expect(page.locator("body")).to_contain_text(re.compile(reason, re.I))
        if attempt == 1:
            shot(page, "wrong-password")
    shot(page, "fifth-wrong-password")

    _log_in(page, "lockme", PASSWORD)
    expect(page).to_have_url(re.compile(r"/login\?.*error=locked"))
    expect(page.locator("body")).to_contain_text(re.compile(r"locked", re.I))
    shot(page, "locked-with-right-password")
    # no session was opened: the overview still sends this browser to the login page
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))
    with live_server.api("admin") as api:
        assert api.get("/api/v1/users/lockme").json()["locked"] is True


def _on_first_phone_screen(page: Page, what: Locator) -> None:
    """Seen without scrolling, and the page does not scroll sideways on a phone."""
    box = what.bounding_box()
    assert box is not None and box["y"] < PHONE["height"], box
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_on_a_phone_everyone_sees_that_nobody_can_be_paged(
    browser: Browser, live_server: LiveServer, shot: Screenshots
) -> None:
    # the live server has no notification channel and no people: as `nachtwacht init` writes
    context = browser.new_context(base_url=live_server.url, viewport=PHONE)
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    try:
        page = context.new_page()
        _log_in(page, "vera")
        expect(page).to_have_url(f"{live_server.url}/")
        banner = page.locator("#paging-banner")
        expect(banner).to_contain_text("Nobody can be paged")
        expect(banner).to_contain_text("no notification channel is configured")
        _on_first_phone_screen(page, banner)
        shot(page, "phone-overview-nobody-can-be-paged")

        with live_server.api("admin") as api:
            made = api.post("/api/v1/incidents", json={"title": "Shop is down", "severity": 1})
            assert made.status_code == 201, made.text
        page.goto(f"/incidents/{made.json()['id']}")
        banner = page.locator("#incident-paging-banner")
        expect(banner).to_contain_text("Nobody was paged for this incident")
        expect(banner).to_contain_text("page NOT delivered")
        _on_first_phone_screen(page, banner)
        entry = page.locator('#timeline [data-kind="not_delivered"]').first
        expect(entry).to_contain_text("NOT delivered: no notification channel is configured")
        shot(page, "phone-incident-nobody-was-paged")
    finally:
        context.close()


def test_the_ack_link_on_a_phone_shows_the_incident_and_acknowledges(
    browser: Browser, live_server: LiveServer, shot: Screenshots
) -> None:
    with live_server.api("admin") as api:
        made = api.post("/api/v1/incidents", json={"title": "Payments fail", "severity": 1})
        assert made.status_code == 201, made.text
    incident = made.json()["id"]
    token = made.json()["ack_url"].rsplit("/ack/", 1)[1]
    # opened from a phone notification: nobody signed in
    context = browser.new_context(base_url=live_server.url, viewport=PHONE)
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto(f"/ack/{token}")
        expect(page.locator("h1")).to_have_text(f"#{incident} Payments fail")
        expect(page.locator(".sev")).to_have_text("S1 Critical")
        expect(page.locator("#ack-since")).to_contain_text("ago")
        expect(page.locator("#ack-deadline")).to_contain_text("15 min")
        # no people configured on this server: a name is asked for, next to the button
        expect(page.locator("#ack-as")).to_contain_text("You are acknowledging as")
        button = page.locator("#ack-button")
        _on_first_phone_screen(page, button)
        box = button.bounding_box()
        assert box is not None and box["y"] + box["height"] <= PHONE["height"]
        assert box["width"] >= PHONE["width"] * 0.8  # a thumb-sized button
        shot(page, "phone-ack-link")
        page.fill("#ack-name", "Alice")
        button.click()
        expect(page.locator("#ack-result")).to_contain_text("Acknowledged as Alice (link)")
        _on_first_phone_screen(page, page.locator("#ack-result"))
        shot(page, "phone-ack-link-done")
    finally:
        context.close()
