"""Every page of the dashboard fits a phone (390×844) as well as a laptop (1280×900).

The person woken at 3 a.m. opens the dashboard on a phone. With realistic data (a failing
probe, an overdue S1, error issues with long titles, a runbook run, an on-call rotation, a
week of analytics) each page in the nav, and the incident, probe and error issue pages, is
loaded at both sizes in Debian's Chromium against a real `nachtwacht serve`:

- nothing scrolls sideways (`scrollWidth <= innerWidth`);
- no table cell is squeezed into a sliver (tables become cards below 700 px);
- the key facts are on screen: the S1's severity and "overdue", the failing probe's name,
  and on the incident page at phone size the Acknowledge button above the fold.

A full-page screenshot of each page at each size is saved into $NACHTWACHT_SCREENSHOTS
(default test-artifacts/screenshots/); docs/img/ holds a few of them (docs/dashboard.md).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.browser_fixtures import (  # noqa: F401 - the *_fixture functions are fixtures
    BIN,
    EXPECT_TIMEOUT_MS,
    PASSWORD,
    LiveServer,
    _listening_socket,
    browser_fixture,
    need_browser,
    serving,
)
from tests.helpers import until_sync
from tests.test_analytics_data import HOUR, add_hours, add_issue
from tests.test_errors_fixtures import exc_event, frame

need_browser(module_level=True)
from playwright.sync_api import Browser, Page, expect  # noqa: E402 - only once we know it is there

pytestmark = pytest.mark.serial  # Chromium and a real serve: one at a time

ROOT = Path(__file__).resolve().parent.parent
SHOTS = Path(os.environ.get("NACHTWACHT_SCREENSHOTS", ROOT / "test-artifacts" / "screenshots"))
SIZES = {"laptop": (1280, 900), "phone": (390, 844)}
LONG_TITLES = [
    "PaymentDeclinedError in checkout.payment_gateway.authorize: card declined by the issuer "
    "(insufficient funds) for order 2026-12-000417",
    "PaymentDeclinedError in checkout.payment_gateway.capture: capture refused after "
    "authorisation expired for order 2026-12-000388",
    "OperationalError: (pymysql.err.OperationalError) (2006, 'MySQL server has gone away')",
]
IMPACT = "No customer can pay; orders pile up as pending since 02:40."
CONFIG = """site: night-shift
store:
  url: "sqlite:///{db}"
engine:
  startup_spread: 0.2s
  flush_interval: 0.2s
auth:
  ip_max_failures: 1000
components:
  db: Database
  web: Web server
  payments: Payment gateway
notify:
  channels:
    hook: {{kind: webhook, url: "http://127.0.0.1:{hook_port}/hook"}}
probes:
  - name: db-primary-port
    kind: tcp
    host: 127.0.0.1
    port: {db_port}
    interval: 1s
    retries: 0
    component: db
  - name: web-port
    kind: tcp
    host: 127.0.0.1
    port: {web_port}
    interval: 1s
    retries: 0
    component: web
people:
  contacts:
    - id: alice
      name: Alice Anders
      roles: [oncall_engineer]
      email: alice.anders@example.org
      phone: "+31 6 1234 5678"
      backup: tina
    - id: bob
      name: Bob Bakker-van-den-Berg
      roles: [oncall_engineer]
      email: bob.bakker-van-den-berg@example.org
      phone: "+31 6 8765 4321"
    - {{id: tina, name: Tina Techlead, roles: [technical_lead], phone: "+31 6 2345 6789"}}
    - {{id: mark, name: Mark Manager, roles: [operations_manager, management]}}
  rotations:
    - name: primary
      type: weekly
      handoff: "mon 09:00"
      start: 2026-01-01
      members: [alice, bob]
"""


@pytest.fixture(name="live_server", scope="module")
def live_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """`nachtwacht serve` with two tcp probes, contacts and a weekly rotation."""
    tmp = tmp_path_factory.mktemp("phone")
    # pages reach a webhook that takes them all: no "nobody was paged" banner on top
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    targets = {"db-primary-port": _listening_socket(), "web-port": _listening_socket()}
    config = tmp / "nachtwacht.yaml"
    config.write_text(
        CONFIG.format(
            db=tmp / "nachtwacht.db",
            db_port=targets["db-primary-port"].getsockname()[1],
            web_port=targets["web-port"].getsockname()[1],
            hook_port=hook.server_address[1],
        ),
        encoding="utf-8",
    )
    added = subprocess.run(
        [str(BIN), "user", "add", "alice", "--role", "responder", "--password-stdin"]
        + ["--config", str(config)],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert added.returncode == 0, added.stderr
    try:
        with serving(config, tmp, targets) as server:
            yield server
    finally:
        hook.shutdown()
        hook.server_close()


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(name="seeded", scope="module")
def seeded_fixture(live_server: LiveServer) -> dict[str, Any]:
    """A failing probe with its incident, an overdue S1, long-titled error issues with a week
    of counts, an event with a long release and message, a runbook run."""
    store = Store(f"sqlite:///{live_server.config.parent / 'nachtwacht.db'}")
    now = time.time()
    last = int(now // HOUR)
    with store.begin() as conn:
        for n, title in enumerate(LONG_TITLES):
            issue = add_issue(
                conn, title, now - 8 * 86400, category="payments" if n < 2 else "database"
            )
            add_hours(
                conn,
                issue,
                {last - 167 + k: 1 + n + k // 24 + (40 if k == 150 else 0) for k in range(168)},
            )
    live_server.stop_target("db-primary-port")  # a critical probe and an incident of its own
    with live_server.api("admin") as api:
        s1 = api.post(
            "/api/v1/incidents",
            json={
                "title": "Checkout down: every card payment is declined by the gateway",
                "severity": 1,
                "component": "payments",
                "impact": IMPACT,
            },
        ).json()
        run = api.post(
            "/api/v1/runbooks/immediate-response/runs",
            json={"incident_id": s1["id"], "dry_run": True},
        )
        assert run.status_code == 201, run.text
        api.post(
            f"/api/v1/incidents/{s1['id']}/updates",
            json={"message": "Gateway returns 402 for every authorisation; calling the PSP."},
        )
        project = api.post("/api/v1/projects", json={"name": "shop"}).json()
        # a drill run and ended: the Drills page and its report (issue 18)
        drill = api.post("/api/v1/drills", json={"scenario": "database-down"}).json()
        api.post(f"/api/v1/drills/{drill['id']}/end")
    # the S1 was declared 40 minutes ago: its response target has passed
    with store.begin() as conn:
        conn.execute(
            update(t.incidents)
            .where(t.incidents.c.id == s1["id"])
            .values(
                started_at=now - 2400,
                detected_at=now - 2400,
                created_at=now - 2400,
                response_due_at=now - 1500,
            )
        )
    store.dispose()
    event = exc_event(
        "PaymentDeclinedError",
        "card declined by the issuer (insufficient funds) for order 2026-12-000417 after "
        "3 retries against https://gateway.example-psp.com/v2/authorisations",
        frames=[
            frame("handle", "return app(request)", module="shop.web", in_app=False),
            frame("authorize", "raise PaymentDeclinedError(reply.reason)"),
        ],
        release="shop@2026.12.07-build.4711+g3f9c2ab1d",
        environment="production-eu-west-1",
    )
    sent = httpx.post(
        f"{live_server.url}/api/{project['id']}/store/",
        json=event,
        headers={"X-Sentry-Auth": f"Sentry sentry_key={project['public_key']}, sentry_version=7"},
    )
    assert sent.status_code == 200, sent.text
    with live_server.api("viewer") as api:

        def stored() -> list[dict[str, Any]]:
            return api.get("/api/v1/errors/issues", params={"q": "insufficient"}).json()

        until_sync(stored, "the event stored", 60)
        # the engine opens an incident for the failed probe
        until_sync(
            lambda: any(i["component"] == "db" for i in api.get("/api/v1/incidents").json()),
            "an incident for the failed probe",
            60,
        )
        issues = stored()
    return {"s1": s1["id"], "issue": issues[0]["id"], "drill": drill["id"]}


def _log_in(page: Page) -> None:
    page.goto("/login")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.locator("form:has(input[name=password]) [type=submit]").click()
    expect(page.locator("#status-grid")).to_be_visible()


# the innermost elements that reach past the right edge (to say what scrolls sideways)
WIDE = """() => {
  const past = (el) => el.getBoundingClientRect().right > window.innerWidth + 0.5;
  const name = (el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
    + (typeof el.className === "string" && el.className ? "." + el.className.split(" ")[0] : "");
  return [...document.querySelectorAll("body *")]
    .filter((el) => past(el) && ![...el.children].some(past))
    .slice(0, 5)
    .map((el) => name(el) + " " + Math.round(el.getBoundingClientRect().right) + " px");
}"""


# table cells with some text that a layout squeezed to less than this many pixels
SQUEEZED = """(min) => [...document.querySelectorAll("main table td")]
  .filter((td) => td.offsetParent !== null && td.innerText.trim().length > 8)
  .filter((td) => td.getBoundingClientRect().width < min)
  .map((td) => td.innerText.trim().slice(0, 40)
    + " (" + Math.round(td.getBoundingClientRect().width) + " px)")"""


def _misfits(page: Page) -> list[str]:
    """What does not fit: a sideways scroll, table cells squeezed to a sliver."""
    found = []
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    if scroll > inner:
        wide = page.evaluate(WIDE)
        found.append(f"scrolls sideways: {scroll} px in {inner}: {wide}")
    squeezed = page.evaluate(SQUEEZED, 64)
    if squeezed:
        found.append(f"table cells squeezed: {squeezed}")
    return found


def _pages(seeded: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("overview", "/"),
        ("incidents", "/incidents"),
        ("incident", f"/incidents/{seeded['s1']}"),
        ("probe", "/probes/db-primary-port"),
        ("errors", "/errors"),
        ("error-issue", f"/errors/{seeded['issue']}"),
        ("analytics", "/analytics"),
        ("runbooks", "/runbooks"),
        ("reports", "/reports"),
        ("oncall", "/oncall"),
        ("settings", "/settings"),
        ("drills", "/drills"),
        ("drill", f"/drills/{seeded['drill']}"),
    ]


@pytest.mark.parametrize("size", list(SIZES))
def test_every_page_fits_and_shows_what_matters(
    browser: Browser, live_server: LiveServer, seeded: dict[str, Any], size: str
) -> None:
    width, height = SIZES[size]
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": width, "height": height}
    )
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        page = context.new_page()
        _log_in(page)
        bad: dict[str, list[str]] = {}
        for name, path in _pages(seeded):
            response = page.goto(path)
            assert response is not None and response.status == 200, path
            page.wait_for_load_state("networkidle")
            # first, so that a failing check below leaves its evidence behind
            page.screenshot(path=str(SHOTS / f"{name}-{size}.png"), full_page=True)
            # what the screen shows first, before any scrolling
            page.screenshot(path=str(SHOTS / f"{name}-{size}-top.png"))
            main = page.locator("main")
            if name == "overview":
                cell = page.locator('#status-grid [data-probe="db-primary-port"]')
                expect(cell).to_have_attribute("data-state", "critical")
                expect(cell).to_be_visible()
                expect(cell).to_contain_text("db-primary-port")
                expect(cell).to_contain_text("CRIT")
            if name in ("overview", "incidents"):
                row = main.locator(f'tr:has(a[href="/incidents/{seeded["s1"]}"])').first
                expect(row.locator(".sev-1")).to_be_visible()
                expect(row.get_by_text("overdue", exact=False)).to_be_visible()
            if name == "incident":
                expect(page.locator("#sla")).to_contain_text("overdue")
                expect(page.locator("#ack-button")).to_be_visible()
                # acknowledge, the deadline and the impact: on the first screen, no scrolling
                for what in ("#ack-button", "#sla", f"dd:has-text('{IMPACT}')"):
                    box = page.locator(what).bounding_box()
                    assert box is not None and box["y"] + box["height"] <= height, (
                        f"{what} is below the fold at {size}: {box}"
                    )
                select = page.locator("#assign-contact")
                sel = select.bounding_box()
                assert sel is not None and sel["x"] + sel["width"] <= width, sel
            if name == "probe":
                expect(page.locator("#probe-title")).to_contain_text("db-primary-port")
            if name == "errors":
                expect(main.get_by_text(LONG_TITLES[0][:40]).first).to_be_visible()
            if name == "oncall":
                rotation = main.locator('[data-rotation="primary"]')
                expect(rotation).to_contain_text("Alice Anders")
                expect(rotation).to_contain_text("Bob Bakker-van-den-Berg")
            if name == "drill":
                expect(main.locator("table.drill-figures")).to_contain_text("Time to page")
            if misfits := _misfits(page):
                bad[path] = misfits
    finally:
        context.close()
    assert bad == {}, bad
