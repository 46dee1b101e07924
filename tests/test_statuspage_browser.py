"""The public status page in Debian's Chromium against a real `nachtwacht serve`, at desktop
and phone size, with realistic data: a failing probe, an incident with an internal title and
a commander, one published notice and one draft, 90 days of hourly rollups, a maintenance
window with an internal name.

What it must show (issue 18): the published notice and nothing unapproved; no internal detail
in the page's HTML (probe targets and messages, contact names and addresses, the incident's
own title, the maintenance window's name). And the admins' side: the draft on /statuspage,
refused to a responder who is not the commander, published by the CLI's approval.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select

from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.browser_fixtures import (  # noqa: F401 - the *_fixture functions are fixtures
    ARTIFACTS,
    BIN,
    EXPECT_TIMEOUT_MS,
    PASSWORD,
    LiveServer,
    _listening_socket,
    browser_fixture,
    need_browser,
    serving,
)
from tests.conftest import closed_port
from tests.helpers import until_sync

need_browser(module_level=True)
from playwright.sync_api import Browser, Page, expect  # noqa: E402 - only once we know it is there

pytestmark = pytest.mark.serial  # Chromium and a real serve: one at a time

SIZES = {"desktop": (1280, 900), "phone": (390, 844)}
INTERNAL_TITLE = "mysqld OOM-killed on db1.internal after the ledger import"
DRAFT_TITLE = "Payments restored (draft, not approved)"
WINDOW_NAME = "Swap disks on db1 (ticket OPS-7781)"
CONFIG = """site: vereniging
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
notify:
  channels:
    # nothing listens there: the confirm mails wait in the outbox, which is all this needs
    mail: {{kind: email, host: 127.0.0.1, port: {closed_port}, starttls: false}}
people:
  contacts:
    - {{id: alice, name: Alice Anders, roles: [oncall_engineer],
       email: alice.anders@example.org, phone: "+31 6 1234 5678"}}
    - {{id: mark, name: Mark Manager, roles: [operations_manager, management],
       email: mark.manager@example.org}}
probes:
  - {{name: db-primary-port, kind: tcp, host: 127.0.0.1, port: {db_port}, interval: 1s,
     retries: 0, component: db}}
  - {{name: web-port, kind: tcp, host: 127.0.0.1, port: {web_port}, interval: 1s,
     retries: 0, component: web}}
status_page:
  enabled: true
  title: Vereniging status
  contact: support@vereniging.example
  components:
    Member database: db
    Website and member portal: web
"""


@pytest.fixture(name="live_server", scope="module")
def live_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("statuspage")
    targets = {"db-primary-port": _listening_socket(), "web-port": _listening_socket()}
    config = tmp / "nachtwacht.yaml"
    config.write_text(
        CONFIG.format(
            db=tmp / "nachtwacht.db",
            db_port=targets["db-primary-port"].getsockname()[1],
            web_port=targets["web-port"].getsockname()[1],
            closed_port=closed_port(),
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
    with serving(config, tmp, targets) as server:
        yield server


def _cli(server: LiveServer, *args: str) -> str:
    done = subprocess.run(
        [str(BIN), "statuspage", *args, "--config", str(server.config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(name="seeded", scope="module")
def seeded_fixture(live_server: LiveServer) -> dict[str, Any]:
    store = Store(f"sqlite:///{live_server.config.parent / 'nachtwacht.db'}")
    now = time.time()
    live_server.stop_target("db-primary-port")  # refused: a critical probe with its message
    with live_server.api("admin") as api:
        inc = api.post(
            "/api/v1/incidents",
            json={
                "title": INTERNAL_TITLE,
                "severity": 1,
                "component": "db",
                "impact": "Alice says the ledger import ate all memory",
                "commander": "mark",
            },
        ).json()
        made = api.post(
            "/api/v1/maintenance",
            json={
                "name": WINDOW_NAME,
                "starts_at": now + 7200,
                "ends_at": now + 10800,
                "components": ["web"],
            },
        )
        assert made.status_code in (200, 201), made.text
    published = _cli(live_server, "notice", "draft", str(inc["id"]), "--json")
    notice_id = json.loads(published)["id"]
    _cli(live_server, "notice", "approve", str(notice_id), "--actor", "mark")
    draft = _cli(live_server, "notice", "draft", str(inc["id"]), "--title", DRAFT_TITLE, "--json")
    draft_id = json.loads(draft)["id"]
    with store.begin() as conn:
        ids = dict(conn.execute(select(t.probes.c.name, t.probes.c.id)).all())
        hour = int(now // 3600)
        bad = range(30 * 24, 30 * 24 + 5)  # five poor hours of the database, a month ago
        rows = [
            {"probe_id": ids[name], "bucket": hour - back, "n": 60,
             "n_ok": 40 if (name == "db-primary-port" and back in bad) else 60,
             "n_warning": 0, "n_critical": 0, "n_unknown": 0}
            for name in ids for back in range(1, 90 * 24)
        ]  # fmt: skip
        conn.execute(insert(t.rollup_hour), rows)
    store.dispose()

    def failing() -> bool:
        text = httpx.get(f"{live_server.url}/status-page/status.json", timeout=5).json()
        return text["components"][0]["state"] == "major_outage"

    until_sync(failing, "the database's probe to fail and the page to say so", 60)
    return {"incident": inc["id"], "draft": draft_id}


def _secrets(server: LiveServer) -> list[str]:
    text = server.config.read_text()
    ports = [
        line.split("port: ")[1].split(",")[0] for line in text.splitlines() if "port: " in line
    ]
    return [
        INTERNAL_TITLE,
        "OOM",
        "db1.internal",
        DRAFT_TITLE,
        WINDOW_NAME,
        "OPS-7781",
        "db-primary-port",
        "web-port",
        "127.0.0.1",
        *(f":{p}" for p in ports),
        "refused",
        "Connection",
        "Alice",
        "alice.anders@example.org",
        "Mark",
        "mark.manager@example.org",
        "1234 5678",
        "ledger import",
    ]


@pytest.mark.parametrize("size", list(SIZES))
def test_the_public_page_shows_approved_notices_and_nothing_internal(
    browser: Browser, live_server: LiveServer, seeded: dict[str, Any], size: str
) -> None:
    width, height = SIZES[size]
    ctx = browser.new_context(base_url=live_server.url, viewport={"width": width, "height": height})
    ctx.set_default_timeout(EXPECT_TIMEOUT_MS)
    try:
        page: Page = ctx.new_page()
        answer = page.goto("/status-page")
        assert answer is not None and answer.status == 200
        expect(page.locator("#page-title")).to_have_text("Vereniging status")
        expect(page.locator("#overall")).to_have_attribute("data-state", "major_outage")
        database = page.locator(".component[data-component='Member database']")
        expect(database).to_have_attribute("data-state", "major_outage")
        expect(database.locator(".bar")).to_have_count(90)
        # the five poor hours fall in one day, or two when they straddle midnight
        assert database.locator(".bar-poor, .bar-fair").count() in (1, 2)
        expect(
            page.locator(".component[data-component='Website and member portal']")
        ).to_have_attribute("data-state", "operational")
        incident = page.locator("#incidents .incident")
        expect(incident).to_have_count(1)
        expect(incident.locator("h3")).to_have_text("Service disruption: Member database")
        expect(incident).to_contain_text("We are currently experiencing technical issues")
        expect(page.locator("#maintenance .maint")).to_contain_text("Website and member portal")
        expect(page.locator("#subscribe-form")).to_be_visible()
        expect(page.locator("#feed-link")).to_be_visible()
        html = page.content()
        leaked = [s for s in _secrets(live_server) if s in html]
        assert leaked == [], leaked
        assert page.get_by_text(DRAFT_TITLE).count() == 0
        scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner, f"scrolls sideways at {size}"
        shot = ARTIFACTS / f"status-page-{size}.png"
        shot.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        page.fill("#email", f"member-{size}@example.net")
        page.get_by_role("button", name="Subscribe").click()
        expect(page.locator("#answer")).to_contain_text("a confirmation link is on its way")
    finally:
        ctx.close()


def test_a_responder_who_is_not_commander_cannot_publish_but_the_commander_can(
    browser: Browser, live_server: LiveServer, seeded: dict[str, Any]
) -> None:
    ctx = browser.new_context(base_url=live_server.url, viewport={"width": 390, "height": 844})
    ctx.set_default_timeout(EXPECT_TIMEOUT_MS)
    try:
        page = ctx.new_page()
        page.goto("/login")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", PASSWORD)
        page.locator("form:has(input[name=password]) [type=submit]").click()
        expect(page.locator("#status-grid")).to_be_visible()
        page.goto(f"/incidents/{seeded['incident']}")
        draft = page.locator(f"#status-panel [data-notice='{seeded['draft']}']")
        expect(draft).to_have_attribute("data-state", "draft")
        draft.get_by_role("button", name="Approve and publish").click()
        expect(page.locator("#flash")).to_contain_text("only its commander (mark) or an admin")
        scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner
        page.goto("/statuspage")
        expect(page.locator(f"[data-notice='{seeded['draft']}']")).to_have_attribute(
            "data-state", "draft"
        )
        expect(page.locator("main")).to_contain_text("waiting for confirmation")
        scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner
    finally:
        ctx.close()
    assert DRAFT_TITLE not in httpx.get(f"{live_server.url}/status-page", timeout=5).text
    _cli(live_server, "notice", "approve", str(seeded["draft"]), "--actor", "mark")

    def published() -> bool:  # the page is cached for status_page.cache_for (5 s by default)
        return DRAFT_TITLE in httpx.get(f"{live_server.url}/status-page", timeout=5).text

    until_sync(published, "the approved notice on the public page", 30)
