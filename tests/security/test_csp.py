"""Every dashboard page satisfies a strict Content-Security-Policy in a real Chromium.

The policy (script-src 'self', style-src 'self', no inline anything) only protects if the
dashboard keeps to it: an inline script or style attribute left behind would be refused, and a
chart or poll would quietly stop working. So each page is loaded, with real data, in Debian's
Chromium against a real `nachtwacht serve`; the browser's own CSP reports (console "Refused
to ..." errors and `securitypolicyviolation` events) must stay empty, and the scripted parts
(htmx polls and panels, uPlot charts, keyboard shortcuts) must still work under the policy.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from nachtwacht.store import tables as t
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
from tests.test_errors_fixtures import exc_event, frame

need_browser(module_level=True)
from playwright.sync_api import ConsoleMessage, Page, expect  # noqa: E402 - only once we know it is there

pytestmark = pytest.mark.serial  # Chromium and a real serve: one at a time

POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
    "connect-src": "'self'",
}
# run before any script of the page (Playwright injects it over CDP, outside the policy)
WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "") + " " + (e.sample || ""));
}, true);
"""


def directives(header: str) -> dict[str, str]:
    out = {}
    for part in header.split(";"):
        name, _, value = part.strip().partition(" ")
        if name:
            out[name] = value.strip()
    return out


@pytest.fixture(name="seeded", scope="module")
def seeded_fixture(live_server: LiveServer) -> dict[str, Any]:
    """Realistic data on every page: an open and a resolved incident (timeline, runbook run,
    post-mortem), a failing probe, an error issue with a stack trace, a week of error counts
    for the analytics charts."""
    store = Store(f"sqlite:///{live_server.config.parent / 'nachtwacht.db'}")
    now = time.time()
    last = int(now // HOUR)
    with store.begin() as conn:  # first: project 1, old enough for a week of analytics
        week = add_issue(conn, "OperationalError: gone away", now - 8 * 86400, category="database")
        add_hours(
            conn, week, {last - 167 + k: 1 + k // 24 + (40 if k == 150 else 0) for k in range(168)}
        )
    live_server.stop_target("db-port")  # a critical cell and an incident of its own
    with live_server.api("admin") as api:
        opened = api.post(
            "/api/v1/incidents",
            json={
                "title": 'Checkout "slow" <again> & payments failing',
                "severity": 2,
                "component": "web",
                "impact": "Customers cannot pay; about 30 % of orders fail.",
            },
        ).json()
        api.post(
            f"/api/v1/incidents/{opened['id']}/updates", json={"message": "Looking at the DB pool."}
        )
        run = api.post(
            "/api/v1/runbooks/immediate-response/runs",
            json={"incident_id": opened["id"], "dry_run": True},
        )
        assert run.status_code == 201, run.text
        done = api.post(
            "/api/v1/incidents", json={"title": "Nightly backup late", "severity": 3}
        ).json()
        api.post(f"/api/v1/incidents/{done['id']}/ack", json={})
        api.put(
            f"/api/v1/incidents/{done['id']}/postmortem",
            json={"root_cause": "The backup disk was full.", "lessons": "Alert at 80 %."},
        )
        resolved = api.post(
            f"/api/v1/incidents/{done['id']}/resolve", json={"message": "Space freed."}
        )
        assert resolved.status_code == 200, resolved.text
        project = api.post("/api/v1/projects", json={"name": "shop"}).json()
    event = exc_event(
        "KeyError",
        "'sku'",
        frames=[
            frame("handle", "return app(request)", module="shop.web", in_app=False),
            frame("checkout", "price = item['sku'] * qty  # <b>not</b> markup"),
        ],
    )
    sent = httpx.post(
        f"{live_server.url}/api/{project['id']}/store/",
        json=event,
        headers={"X-Sentry-Auth": f"Sentry sentry_key={project['public_key']}, sentry_version=7"},
    )
    assert sent.status_code == 200, sent.text
    with live_server.api("viewer") as api:
        deadline = time.monotonic() + 15
        while not (issues := api.get("/api/v1/errors/issues", params={"q": "KeyError"}).json()):
            assert time.monotonic() < deadline, "the event was not stored"
            time.sleep(0.1)
    with store.connect() as conn:
        token = conn.execute(
            select(t.incidents.c.ack_token).where(t.incidents.c.id == opened["id"])
        ).scalar_one()
    store.dispose()
    return {"open": opened["id"], "resolved": done["id"], "issue": issues[0]["id"], "ack": token}


class Watched:
    """A page whose CSP reports and script errors are collected."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.reports: list[str] = []
        page.add_init_script(WATCH)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.reports.append(f"script error: {exc}"))

    def _console(self, message: ConsoleMessage) -> None:
        text = message.text
        if "Content Security Policy" in text or text.startswith("Refused to"):
            self.reports.append(f"console: {text}")

    def visit(self, path: str) -> None:
        response = self.page.goto(path)
        assert response is not None and response.status < 500, path
        policy = directives(response.headers["content-security-policy"])
        # the review document adds the hashes of its own <style>; everything else is the same
        style = policy.pop("style-src", "")
        assert style == "'self'" or (
            path.endswith(("review", "format=html")) and "'sha256-" in style
        ), path
        assert policy == {k: v for k, v in POLICY.items() if k != "style-src"}, path
        assert "unsafe" not in response.headers["content-security-policy"], path
        self.page.wait_for_load_state("networkidle")

    def violations(self) -> list[str]:
        return self.reports + self.page.evaluate("window.__csp || []")


@pytest.fixture
def watched(page: Page) -> Iterator[Watched]:
    yield Watched(page)


def _log_in(page: Page, username: str) -> None:
    page.goto("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.locator("form:has(input[name=password]) [type=submit]").click()
    expect(page.locator("#status-grid")).to_be_visible()


def test_every_dashboard_page_loads_without_a_csp_violation_and_its_scripts_work(
    watched: Watched, live_server: LiveServer, seeded: dict[str, Any], shot: Screenshots
) -> None:
    page = watched.page
    found: dict[str, list[str]] = {}

    def check(path: str) -> None:
        watched.visit(path)
        found[path] = watched.violations()
        watched.reports.clear()

    check("/login")
    _log_in(page, "alice")
    found["/ after login"] = watched.violations()

    check("/")
    # htmx: the grid is polled; the failed probe turns critical without a reload
    expect(page.locator('#status-grid [data-probe="db-port"]')).to_have_attribute(
        "data-state", "critical"
    )
    expect(page.locator("#incidents [data-incident]").first).to_be_visible()
    shot(page, "overview")
    # app.js: "g i" goes to the incidents
    page.keyboard.press("g")
    page.keyboard.press("i")
    expect(page).to_have_url(f"{live_server.url}/incidents")
    found["/ keyboard"] = watched.violations()

    check("/probes/web-port")
    expect(page.locator("#chart canvas")).to_be_visible()  # uPlot drew (from the API, via fetch)
    check("/probes/no-such-probe")  # the error page
    check("/incidents")
    check(f"/incidents/{seeded['open']}")
    # the timeline and the runbook panel come in through htmx
    expect(page.locator("#timeline [data-kind]").first).to_be_visible()
    expect(page.locator("#ack-button")).to_be_visible()
    shot(page, "incident")
    check(f"/incidents/{seeded['resolved']}")
    expect(page.locator("body")).to_contain_text("The backup disk was full.")
    check(f"/incidents/{seeded['resolved']}/review")
    expect(page.locator("#figures")).to_be_visible()
    check(f"/api/v1/incidents/{seeded['resolved']}/review?format=html")
    check("/errors")
    expect(page.locator("body")).to_contain_text("KeyError")
    check(f"/errors/{seeded['issue']}")
    expect(page.locator(".frames")).to_contain_text("not</b> markup")
    check("/analytics")
    for chart in ("#chart-daily", "#chart-hours", "#chart-series"):
        expect(page.locator(f"{chart} canvas")).to_be_visible()
    expect(page.locator("#chart-status")).to_contain_text("Drag across")
    shot(page, "analytics")
    check("/runbooks")
    check("/reports")
    expect(page.locator("#figures")).to_be_visible()
    check("/oncall")
    check("/settings")

    bad = {path: v for path, v in found.items() if v}
    assert bad == {}, bad


def test_the_acknowledge_link_page_satisfies_the_policy(
    browser: Any, live_server: LiveServer, seeded: dict[str, Any], shot: Screenshots
) -> None:
    # anonymous, from a phone's mail app: a context of its own, no session
    context = browser.new_context(base_url=live_server.url, viewport={"width": 390, "height": 844})
    try:
        watched = Watched(context.new_page())
        watched.visit(f"/ack/{seeded['ack']}")
        button = watched.page.get_by_role("button", name="Acknowledge")
        expect(button).to_be_visible()
        # the stylesheet applied: the big button of the ack page, not the browser's default
        assert (
            watched.page.evaluate(
                "parseFloat(getComputedStyle(document.querySelector('button')).fontSize)"
            )
            > 20
        )
        shot(watched.page, "ack-link")
        watched.visit("/ack/not-a-real-token-at-all")
        assert watched.violations() == []
    finally:
        context.close()
