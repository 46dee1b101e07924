"""Incident-page forms in Chromium against a real `nachtwacht serve`: a refused action shows
what was typed again, in the form it was typed in."""

from __future__ import annotations

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
from playwright.sync_api import Page, expect  # noqa: E402 - only once we know it is there

pytestmark = pytest.mark.serial


def _log_in(page: Page, username: str) -> None:
    page.goto("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.locator("form:has(input[name=password]) [type=submit]").click()


def test_refused_resolve_keeps_the_resolution_in_the_resolve_form(
    page: Page, live_server: LiveServer, shot: Screenshots
) -> None:
    with live_server.api("admin") as api:
        made = api.post(
            "/api/v1/incidents", json={"title": "Orders fail", "severity": 1, "component": "db"}
        )
        assert made.status_code == 201, made.text
    incident_id = made.json()["id"]

    _log_in(page, "alice")
    page.goto(f"/incidents/{incident_id}")
    page.fill("#resolve-message", "restarted mariadb, orders flow again")
    page.locator("#resolve-form [type=submit]").click()
    # S1 without a passing checklist run or a reason: the gate refuses
    expect(page.locator(".flash.error").first).to_be_visible()
    expect(page.locator("#incident-status")).not_to_contain_text("resolved")
    expect(page.locator("#resolve-message")).to_have_value("restarted mariadb, orders flow again")
    expect(page.locator("#update-message")).to_have_value("")
    shot(page, "refused-resolve-keeps-text")

    # and the other way round: a refused update keeps its text in the update box
    page.fill("#update-message", "still down")
    page.select_option("#update-status", "resolved")
    page.locator("#update-form [type=submit]").click()
    expect(page.locator(".flash.error").first).to_be_visible()
    expect(page.locator("#update-message")).to_have_value("still down")
    expect(page.locator("#resolve-message")).to_have_value("")
