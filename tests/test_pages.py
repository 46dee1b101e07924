"""The dashboard pages: login, live overview fragments, probe/incident/settings pages, actions.

Real app (create_app), real SQLite store, real TCP targets; users log in through /login.
The uptime service is checked on every store backend.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Table, insert

from nachtwacht.clock import FakeClock
from nachtwacht.config.redact import probe_shown
from nachtwacht.probes import rollups, service, uptime
from nachtwacht.probes.registry import kinds
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.auth_helpers import add_user, fast_hashing, login  # noqa: F401 - fixture
from tests.conftest import closed_port
from tests.helpers import settings_for

HTML = {"Accept": "text/html"}
CELL = re.compile(r'data-probe="([^"]+)"\s+data-state="([^"]+)"')


@dataclass
class Site:
    client: TestClient
    clock: FakeClock
    db_socket: socket.socket
    csrf: str = ""

    def login(self, name: str) -> str:
        self.client.cookies.clear()
        self.csrf = login(self.client, name)
        return self.csrf

    def check(self, probe: str) -> dict:
        response = self.client.post(
            f"/api/v1/probes/{probe}/check", headers={"X-CSRF-Token": self.csrf}
        )
        assert response.status_code == 200, response.text
        self.client.app.state.nw.runtime.writer.flush_sync()
        return response.json()

    def declare(self, title: str = "Checkout is down", severity: int = 1) -> int:
        response = self.client.post(
            "/api/v1/incidents",
            json={"title": title, "severity": severity},
            headers={"X-CSRF-Token": self.csrf},
        )
        assert response.status_code == 201, response.text
        return response.json()["id"]


def cells(html: str) -> dict[str, str]:
    return dict(CELL.findall(html))


@pytest.fixture
def site(sqlite_store: Store, clock: FakeClock, fast_hashing: None) -> Iterator[Site]:  # noqa: F811
    db = socket.socket()
    db.bind(("127.0.0.1", 0))
    db.listen(16)  # the kernel completes the handshake: a real target for the tcp probe
    settings = settings_for(
        f"""
site: pages-test
people:
  contacts:
    - {{id: olga, name: Olga Oncall, roles: [oncall_engineer], email: olga@example.org}}
    - {{id: tina, name: Tina Techlead, roles: [technical_lead], email: tina@example.org}}
notify:
  channels:
    mail: {{kind: email, host: 127.0.0.1, port: {closed_port()}, username: nw,
            password: smtp-pass-4711}}
    chat: {{kind: slack, url: "https://hooks.slack.example/services/T01/B02/hook-secret-99"}}
probes:
  - {{name: db, kind: tcp, host: 127.0.0.1, port: {db.getsockname()[1]}, retries: 0,
      component: database, severity: 1}}
  - {{name: web, kind: tcp, host: 127.0.0.1, port: {db.getsockname()[1]}, component: web}}
  - {{name: orders, kind: sql, url: "mysql+pymysql://app:hunter2@127.0.0.1:{closed_port()}/shop",
      component: database}}
  - {{name: memory, kind: host, metric: memory, component: host}}
""",
        sqlite_store.url,
    )
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    add_user(sqlite_store, clock, "rita", "responder")
    add_user(sqlite_store, clock, "vic", "viewer")
    try:
        with TestClient(app) as client:
            yield Site(client, clock, db)
    finally:
        db.close()


# ---------------------------------------------------------------------------- login


def test_anonymous_page_redirects_to_login_and_the_form_leads_back(site: Site) -> None:
    c = site.client
    response = c.get("/incidents?status=all", headers=HTML, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/incidents%3Fstatus%3Dall"
    assert 'name="next" value="/incidents?status=all"' in c.get(response.headers["location"]).text
    assert c.get("/", headers=HTML, follow_redirects=False).headers["location"] == "/login?next=/"
    # scripts (no text/html) hear 401 JSON, as from the API
    assert c.get("/ui/overview/grid").status_code == 401

    form = c.get("/login?next=/incidents").text
    assert 'name="username"' in form and 'name="password"' in form
    assert 'name="next" value="/incidents"' in form
    # the form's login CSRF token, which its cookie (kept by the client) must match
    token = {"login_csrf": re.search(r'name="login_csrf" value="([^"]+)"', form)[1]}
    wrong = c.post(
        "/login",
        data={"username": "rita", "password": "nope", "next": "/incidents"} | token,
        headers=HTML,
        follow_redirects=False,
    )
    assert "error=wrong" in wrong.headers["location"]
    assert "Wrong username or password." in c.get(wrong.headers["location"]).text
    ok = c.post(
        "/login",
        data={"username": "rita", "password": "correct horse battery", "next": "/incidents"}
        | token,
        headers=HTML,
        follow_redirects=False,
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/incidents"
    page = c.get("/incidents", headers=HTML)
    assert page.status_code == 200 and "rita" in page.text and "responder" in page.text
    # logged in, the login page sends you on
    assert c.get("/login?next=/oncall", follow_redirects=False).headers["location"] == "/oncall"


def test_login_page_shows_fixed_words_for_error_codes_only(site: Site) -> None:
    page = site.client.get("/login?error=<script>alert(1)</script>").text
    assert "<script>alert" not in page and "Please log in again." in page
    assert "locked" in site.client.get("/login?error=locked").text


# ---------------------------------------------------------------------------- overview


def test_overview_shows_the_grid_with_probe_cells_and_states(site: Site) -> None:
    site.login("rita")
    site.check("web")
    site.check("memory")
    page = site.client.get("/", headers=HTML)
    assert page.status_code == 200
    html = page.text
    assert 'id="status-grid"' in html and 'id="incidents"' in html
    assert 'hx-get="/ui/overview/grid" hx-trigger="every 5s"' in html
    assert 'hx-get="/ui/overview/incidents" hx-trigger="every 5s"' in html
    assert cells(html) == {"db": "new", "orders": "new", "web": "ok", "memory": "ok"}
    # the state is in words and a symbol, not only a colour
    web_cell = html[html.index('data-probe="web"') :][:600]
    assert "OK" in web_cell and "✓" in web_cell
    assert 'id="host-metrics"' in html and "% used" in html
    assert 'id="uptime"' in html and "no data" in html
    assert "/static/vendor/htmx-2.0.11.min.js" in html
    assert page.headers["content-encoding"] == "gzip"  # a big grid goes compressed


def test_overview_counts_application_errors_of_the_last_24_hours(
    site: Site, sqlite_store: Store
) -> None:
    now = site.clock.now()
    hour = int(now // 3600)
    issue = {
        "project_id": 1,
        "fingerprint_version": 1,
        "title": "KeyError",
        "level": "error",
        "count": 0,
        "last_seen": now,
    }
    with sqlite_store.begin() as conn:
        conn.execute(
            insert(t.error_issues),
            [
                issue | {"fingerprint": "a", "status": "unresolved", "first_seen": now - 3600},
                issue | {"fingerprint": "b", "status": "unresolved", "first_seen": now - 9 * 86400},
                issue | {"fingerprint": "c", "status": "resolved", "first_seen": now - 9 * 86400},
            ],
        )
        conn.execute(
            insert(t.error_issue_hours),
            [
                {"issue_id": 1, "hour": hour, "n": 5},
                {"issue_id": 2, "hour": hour - 23, "n": 2},  # the oldest hour still counted
                {"issue_id": 2, "hour": hour - 24, "n": 100},  # a day ago: not counted
                {"issue_id": 3, "hour": hour, "n": 40},  # resolved: not counted
            ],
        )
    site.login("vic")
    html = site.client.get("/", headers=HTML).text
    assert re.search(r"data-errors-events>7<", html)
    assert re.search(r"data-errors-issues>2<", html)
    assert "<strong>1</strong> new" in html


def test_grid_fragment_reflects_a_probe_state_change(site: Site) -> None:
    site.login("rita")
    assert site.check("db")["state"] == "ok"
    fragment = site.client.get("/ui/overview/grid")
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<section id="status-grid"')
    assert cells(fragment.text)["db"] == "ok"

    site.db_socket.close()  # the database stops listening
    site.clock.advance(30)
    assert site.check("db")["state"] == "critical"
    html = site.client.get("/ui/overview/grid").text
    assert cells(html)["db"] == "critical"
    db_cell = html[html.index('data-probe="db"') :][:700]
    assert "CRIT" in db_cell and "refused" in db_cell.lower()
    assert 'data-overall="critical"' in html
    # host metrics ride along out of band, so they stay live too
    assert 'id="host-metrics" class="panel" aria-labelledby="host-title" hx-swap-oob="true"' in html


def test_incident_list_shows_severity_countdown_overdue_and_who_acknowledged(site: Site) -> None:
    site.login("rita")
    incident = site.declare("Checkout is down", severity=1)
    html = site.client.get("/ui/overview/incidents").text
    row = html[html.index(f'data-incident="{incident}"') :]
    assert "S1" in row[:400] and "respond within 15 min" in row
    site.clock.advance(16 * 60)
    row = site.client.get("/ui/overview/incidents").text
    assert 'data-sla="overdue"' in row and "overdue by 60 s" in row
    site.client.post(f"/incidents/{incident}/ack", data={"csrf_token": site.csrf})
    row = site.client.get("/ui/overview/incidents").text
    assert "rita" in row and 'data-sla="late"' in row


# ---------------------------------------------------------------------------- incidents


def test_incident_page_shows_timeline_and_ack_button_for_responders_only(site: Site) -> None:
    site.login("rita")
    incident = site.declare()
    page = site.client.get(f"/incidents/{incident}", headers=HTML)
    assert page.status_code == 200
    html = page.text
    assert 'id="timeline"' in html and "S1 incident declared: Checkout is down" in html
    assert 'id="ack-button"' in html
    assert "Initial response and stabilisation" in html  # the current escalation step
    assert 'id="next-step">2. Technical lead notification' in html
    assert "EMERGENCY ALERT - S1 Critical - pages-test: Checkout is down" in html  # preview

    viewer_csrf = site.login("vic")
    html = site.client.get(f"/incidents/{incident}", headers=HTML).text
    assert 'id="timeline"' in html
    assert 'id="ack-button"' not in html and 'method="post" action="/incidents/' not in html
    refused = site.client.post(f"/incidents/{incident}/ack", data={"csrf_token": viewer_csrf})
    assert refused.status_code == 403
    assert "responder role" in refused.json()["detail"]


def test_acknowledging_through_the_page_form_records_it_on_the_timeline(site: Site) -> None:
    site.login("rita")
    incident = site.declare()
    response = site.client.post(
        f"/incidents/{incident}/ack", data={"csrf_token": site.csrf}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/incidents/{incident}#timeline"
    stored = site.client.get(f"/api/v1/incidents/{incident}").json()
    assert stored["acknowledged_by"] == "rita"
    html = site.client.get(f"/incidents/{incident}").text
    assert "acknowledged by rita after 0s" in html
    assert 'id="ack-button"' not in html
    timeline = site.client.get(f"/ui/incidents/{incident}/timeline").text
    assert 'data-kind="acknowledged"' in timeline


def test_a_resolved_incident_nobody_acknowledged_says_so_without_alarm(site: Site) -> None:
    site.login("rita")
    incident = site.declare()
    site.clock.advance(60)
    resolved = site.client.post(
        f"/incidents/{incident}/resolve",
        data={"csrf_token": site.csrf, "skip_checklist": "recovered by itself"},
        follow_redirects=False,
    )
    assert resolved.status_code == 303
    html = site.client.get(f"/incidents/{incident}", headers=HTML).text
    cell = html[html.index('id="acknowledged"') :]
    cell = cell[: cell.index("</dd>")]
    assert "not yet" not in cell and "unacked" not in cell
    assert "not acknowledged (resolved after 60 s)" in cell and 'class="muted"' in cell
    # over within its 15 minutes: the response target was met, not missed
    assert re.search(r'id="sla" data-sla="met">.*target met', html)


def test_acknowledging_twice_on_the_page_says_who_did_it_first(site: Site) -> None:
    site.login("rita")
    incident = site.declare()
    first = site.client.post(
        f"/incidents/{incident}/ack", data={"csrf_token": site.csrf}, follow_redirects=False
    )
    assert first.status_code == 303
    events = len(site.client.get(f"/api/v1/incidents/{incident}").json()["timeline"])
    again = site.client.post(
        f"/incidents/{incident}/ack", data={"csrf_token": site.csrf}, follow_redirects=False
    )
    assert again.status_code == 200
    assert re.search(
        rf'id="notice">incident {incident} already acknowledged by rita at \d\d:\d\d<', again.text
    )
    assert len(site.client.get(f"/api/v1/incidents/{incident}").json()["timeline"]) == events


def test_incident_actions_go_through_the_services(site: Site) -> None:
    site.login("rita")
    incident = site.declare(severity=2)

    def post(action: str, **fields: str) -> int:
        data = {"csrf_token": site.csrf, **fields}
        return site.client.post(
            f"/incidents/{incident}/{action}", data=data, follow_redirects=False
        ).status_code

    assert post("update", message="restarted the pool", status="mitigating") == 303
    assert post("severity", severity="1", reason="orders failing") == 303
    assert post("assign", contact="tina") == 303
    assert post("escalate", reason="restart failed three times") == 303
    # an S1 is resolved after a passing restoration checklist, or with a reason to skip it
    assert post("resolve", message="pool resized") == 409
    assert post("resolve", message="pool resized", skip_checklist="pool checked by hand") == 303
    body = site.client.get(f"/api/v1/incidents/{incident}").json()
    assert (body["status"], body["severity"], body["commander"]) == ("resolved", 1, "tina")
    kinds_seen = [e["kind"] for e in body["timeline"]]
    for kind in ("update", "severity", "assigned", "escalated", "checklist_skipped", "resolved"):
        assert kind in kinds_seen
    assert {e["actor"] for e in body["timeline"] if e["kind"] == "update"} == {"rita"}

    # resolving again is no error: the page says it already was, by whom and when
    again = site.client.post(
        f"/incidents/{incident}/resolve", data={"csrf_token": site.csrf}, follow_redirects=False
    )
    assert again.status_code == 200 and 'id="notice"' in again.text
    assert re.search(rf"incident {incident} already resolved at \d\d:\d\d by rita", again.text)
    assert 'class="flash error"' not in again.text
    # refusals render the page again with the service's words and status
    unknown = site.client.post(
        f"/incidents/{incident}/assign", data={"csrf_token": site.csrf, "contact": "nobody"}
    )
    assert unknown.status_code == 422 and "no contact &#39;nobody&#39;" in unknown.text


def test_form_posts_without_the_csrf_token_are_refused(site: Site) -> None:
    site.login("rita")
    incident = site.declare()
    for data in ({}, {"csrf_token": "forged"}):
        response = site.client.post(f"/incidents/{incident}/ack", data=data)
        assert response.status_code == 403 and response.json()["field"] == "csrf_token"
    refused = site.client.post("/settings/maintenance", data={"name": "x", "duration": "1h"})
    assert refused.status_code == 403
    stored = site.client.get(f"/api/v1/incidents/{incident}").json()
    assert stored["acknowledged_at"] is None
    assert site.client.get("/api/v1/maintenance").json() == []


# ---------------------------------------------------------------------------- probe, settings


def test_probe_page_masks_the_password_in_a_sql_url(site: Site) -> None:
    site.login("vic")
    page = site.client.get("/probes/orders")
    assert page.status_code == 200
    assert "hunter2" not in page.text
    assert "mysql+pymysql://app:••••••@127.0.0.1:" in page.text
    assert 'id="chart" data-name="orders"' in page.text
    for label in ("1h", "24h", "7d", "30d", "90d"):
        assert f">{label}</button>" in page.text
    assert "/static/vendor/uPlot-1.6.32.iife.min.js" in page.text
    missing = site.client.get("/probes/nope")
    assert missing.status_code == 404 and "no probe named" in missing.text


def test_settings_page_masks_secrets_and_manages_maintenance(site: Site) -> None:
    site.login("rita")
    html = site.client.get("/settings").text
    for secret in ("smtp-pass-4711", "hunter2", "hook-secret-99", "T01/B02"):
        assert secret not in html
    assert "password: ••••••" in html and "https://hooks.slack.example/••••••" in html
    assert "min_password_length: 10" in html  # a setting about passwords is not a secret

    added = site.client.post(
        "/settings/maintenance",
        data={
            "csrf_token": site.csrf,
            "name": "db upgrade",
            "duration": "2h",
            "components": "database",
        },
        follow_redirects=False,
    )
    assert added.status_code == 303
    windows = site.client.get("/api/v1/maintenance").json()
    assert [(w["name"], w["state"], w["created_by"]) for w in windows] == [
        ("db upgrade", "active", "rita")
    ]
    site.check("web")
    grid = site.client.get("/ui/overview/grid").text
    assert cells(grid)["db"] == "maintenance" and cells(grid)["web"] == "ok"
    assert "MAINT" in grid

    bad = site.client.post(
        "/settings/maintenance", data={"csrf_token": site.csrf, "name": "x", "duration": "soon"}
    )
    assert bad.status_code == 422 and "duration" in bad.text and 'value="x"' in bad.text
    ended = site.client.post(
        f"/settings/maintenance/{windows[0]['id']}/end",
        data={"csrf_token": site.csrf},
        follow_redirects=False,
    )
    assert ended.status_code == 303
    assert site.client.get("/api/v1/maintenance").json() == []


def test_oncall_page_names_roles_and_contacts(site: Site) -> None:
    site.login("vic")
    html = site.client.get("/oncall").text
    assert "Olga Oncall" in html and "Technical lead" in html and "Tina Techlead" in html


def test_a_stored_probe_config_is_masked_by_its_kinds_schema() -> None:
    masked = probe_shown(
        {
            "name": "web",
            "kind": "http",
            "url": "https://nw:pa55@shop.example/health?lang=en&password=x1",
            "headers": {"Authorization": "Bearer abc", "X-Api-Key": "k", "Accept": "json"},
            "body": None,
            "retries": 3,
            "old_key": "from an older version",
        }
    )
    assert masked["url"] == "https://nw:••••••@shop.example/health?lang=••••••&password=••••••"
    assert masked["headers"] == {"Authorization": "••••••", "X-Api-Key": "••••••", "Accept": "json"}
    assert masked["body"] is None and masked["retries"] == 3
    assert masked["old_key"] == "••••••"  # a key the schema does not know is not trusted


# ---------------------------------------------------------------------------- uptime

NOW = 1_800_000_000.0 - (1_800_000_000 % 3600) + 1800  # half past an hour
HOUR = int(NOW // 3600)


def _rollup(table: Table, probe_id: int, bucket: int, n: int, n_ok: int) -> dict:
    row = {
        "probe_id": probe_id,
        "bucket": bucket,
        "n": n,
        "n_ok": n_ok,
        "n_warning": 0,
        "n_critical": n - n_ok,
        "n_unknown": 0,
    }
    if table is t.rollup_minute:
        row["hour"] = bucket // 60
    return row


def test_uptime_is_ok_checks_over_all_checks_per_window(store: Store) -> None:
    make = kinds()["tcp"][0]
    configs = [make(name=n, kind="tcp", host="127.0.0.1", port=1) for n in ("a", "b")]
    with store.begin() as conn:
        ids = service.sync_probes(conn, configs, NOW)
        a = ids["a"]
        h = t.rollup_hour
        conn.execute(
            insert(h),
            [
                _rollup(h, a, HOUR - 2, 100, 90),  # in every window
                _rollup(h, a, HOUR - 50, 100, 50),  # 7 d and 30 d
                _rollup(h, a, HOUR - 24 * 20, 100, 0),  # 30 d only
                _rollup(h, a, HOUR - 24 * 40, 100, 100),  # too old for any window
                # at the watermark: not rolled up yet as far as readers know; minutes count
                _rollup(h, a, HOUR - 1, 1000, 0),
            ],
        )
        m = t.rollup_minute
        conn.execute(
            insert(m),
            [_rollup(m, a, (HOUR - 1) * 60 + 5, 10, 10), _rollup(m, a, HOUR * 60 + 1, 10, 10)],
        )
        store.set_meta(conn, rollups.HOUR_KEY, HOUR - 1, NOW)
    cache = uptime.UptimeCache()
    with store.connect() as conn:
        found = uptime.uptime(conn, NOW, [a, ids["b"]], cache=cache)
    assert found[a]["24h"] == pytest.approx(110 / 120)
    assert found[a]["7d"] == pytest.approx(160 / 220)
    assert found[a]["30d"] == pytest.approx(160 / 320)
    assert found[ids["b"]] == {"24h": None, "7d": None, "30d": None}

    # hand-loaded minutes (no minute watermark) count at once
    with store.begin() as conn:
        conn.execute(insert(m), [_rollup(m, ids["b"], HOUR * 60 + 2, 4, 3)])
    with store.connect() as conn:
        again = uptime.uptime(conn, NOW, [a, ids["b"]], cache=cache)
    assert again[ids["b"]]["24h"] == pytest.approx(0.75)
    assert again[a] == found[a]
    # under the rollups' watermarks, a new minute counts once the minute watermark moves past it
    with store.begin() as conn:
        store.set_meta(conn, rollups.MINUTE_KEY, HOUR * 60 + 3, NOW)
    with store.connect() as conn:
        uptime.uptime(conn, NOW, [ids["b"]], cache=cache)
    with store.begin() as conn:
        conn.execute(insert(m), [_rollup(m, ids["b"], HOUR * 60 + 3, 4, 0)])
        store.set_meta(conn, rollups.MINUTE_KEY, HOUR * 60 + 4, NOW + 60)
    with store.connect() as conn:
        later = uptime.uptime(conn, NOW + 60, [ids["b"]], cache=cache)
    assert later[ids["b"]]["24h"] == pytest.approx(3 / 8)
    # and hour HOUR-1 comes from its hour row once the hour watermark passes it
    with store.begin() as conn:
        store.set_meta(conn, rollups.HOUR_KEY, HOUR, NOW)
    with store.connect() as conn:
        moved = uptime.uptime(conn, NOW + 60, [a], cache=cache)
    assert moved[a]["24h"] == pytest.approx((90 + 0 + 10) / (100 + 1000 + 10))


def test_a_form_posted_after_the_session_expired_goes_back_to_login(
    sqlite_store: Store, clock: FakeClock
) -> None:
    settings = settings_for("probes: []\n", sqlite_store.url)
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    with TestClient(app, follow_redirects=False) as anonymous:
        response = anonymous.post(
            "/incidents/1/ack",
            data={"csrf_token": "stale"},
            headers={"referer": "http://testserver/incidents/1"},
        )
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/incidents/1"


def test_probe_page_links_to_its_open_incident(site: Site) -> None:
    site.login("rita")
    site.check("db")
    assert "probe-incident" not in site.client.get("/probes/db").text
    incident_id = site.declare("Database down")
    store = site.client.app.state.nw.runtime.store
    now = site.clock.now()
    with store.begin() as conn:
        probe = service.probe_by_name(conn, "db")
        assert probe is not None
        conn.execute(
            insert(t.alerts).values(
                fingerprint="probe:db",
                source="probe",
                probe_id=probe["id"],
                title="db down",
                component="database",
                severity=1,
                status="firing",
                started_at=now,
                fired_at=now,
                last_seen=now,
                incident_id=incident_id,
            )
        )
    page = site.client.get("/probes/db").text
    assert f'<a href="/incidents/{incident_id}">S1 #{incident_id} Database down</a>' in page
    assert "probe-incident" not in site.client.get("/probes/web").text
    resolved = site.client.post(
        f"/api/v1/incidents/{incident_id}/resolve",
        json={"message": "back", "skip_checklist": "tested by hand"},
        headers={"X-CSRF-Token": site.csrf},
    )
    assert resolved.status_code == 200, resolved.text
    assert "probe-incident" not in site.client.get("/probes/db").text


def test_incident_page_links_an_alerts_probe_and_its_http_generator_url(site: Site) -> None:
    site.login("rita")
    incident_id = site.declare("Orders fail")
    store = site.client.app.state.nw.runtime.store
    now = site.clock.now()
    common = {"status": "firing", "started_at": now, "fired_at": now, "last_seen": now}
    with store.begin() as conn:
        probe = service.probe_by_name(conn, "db")
        assert probe is not None
        for fingerprint, source, title, message in (
            ("probe:db", "probe", "db refused", "Source: https://not-a-link.example/"),
            (
                "am:1",
                "alertmanager",
                "High latency",
                "p99 up\nSource: https://prom.example/g?x=1&y=2",
            ),
            ("am:2", "alertmanager", "Sneaky", "Source: javascript:alert(1)"),
        ):
            conn.execute(
                insert(t.alerts).values(
                    fingerprint=fingerprint,
                    source=source,
                    title=title,
                    component="database",
                    severity=1,
                    message=message,
                    incident_id=incident_id,
                    probe_id=probe["id"] if source == "probe" else None,
                    **common,
                )
            )
    page = site.client.get(f"/incidents/{incident_id}").text
    assert '<a href="/probes/db">db refused</a>' in page
    assert 'href="https://prom.example/g?x=1&amp;y=2" class="alert-source"' in page
    assert page.count('class="alert-source"') == 1
    assert "javascript:" not in page and "not-a-link" not in page


def test_settings_page_shows_problems_first_then_what_matters_and_folds_the_config(
    site: Site,
) -> None:
    site.login("vic")
    html = site.client.get("/settings").text
    problems = html.index('id="config-problems"')
    glance = html.index('id="config-summary"')
    assert problems < glance < html.index('id="maintenance"') < html.index('id="config-yaml"')
    # the public URL is the default loopback one: pages would carry links phones cannot open
    assert "<code>incidents.public_url</code>: acknowledge links" in html[problems:glance]
    at_a_glance = html[glance : html.index('id="maintenance"')]
    assert re.search(r'<dd id="probe-count">4 <span class="muted">\(2 tcp, 1 sql, 1 host\)', html)
    assert "<strong>mail</strong> <span" in at_a_glance and "127.0.0.1:" in at_a_glance
    assert "https://hooks.slack.example/••••••" in at_a_glance
    assert "<strong>Olga Oncall</strong> oncall engineer" in at_a_glance
    assert "<strong>protocol</strong>" in at_a_glance and "for S1, S2, S3" in at_a_glance
    assert "http://" in html[html.index('id="public-url"') :][:80]
    folded = html[html.index("<details>", glance) : html.index("</details>", glance)]
    assert 'id="config-yaml"' in folded
    assert "null" not in folded and "phone:" not in folded
    assert "smtp-pass-4711" not in html and "hunter2" not in html


# ---------------------------------------------------------------------------- the ack link


def _ack_token(site: Site, incident: int) -> str:
    detail = site.client.get(f"/api/v1/incidents/{incident}").json()
    return detail["ack_url"].rsplit("/ack/", 1)[1]


def test_the_ack_link_shows_what_is_acknowledged_and_as_whom(site: Site) -> None:
    site.login("rita")
    incident = site.declare("Checkout is down", severity=1)
    token = _ack_token(site, incident)
    site.clock.advance(5 * 60)

    site.client.cookies.clear()  # from a phone notification: nobody signed in
    page = site.client.get(f"/ack/{token}").text
    assert "S1 Critical" in page and f"#{incident} Checkout is down" in page
    assert "id=ack-since>" in page and "(5 min ago)" in page
    assert "id=ack-deadline>" in page and "in 10 min" in page
    # the link names the incident, not a person: pick yourself from those it was sent to
    # (the on-call engineer so far; the technical lead is paged at a later step)
    assert "name=actor" not in page
    assert "value='olga' required checked> Olga Oncall" in page and "value='tina'" not in page
    done = site.client.post(f"/ack/{token}", data={"contact": "olga"})
    assert done.status_code == 200
    assert "Acknowledged as <strong>Olga Oncall (link)</strong>" in done.text
    site.login("rita")
    stored = site.client.get(f"/api/v1/incidents/{incident}").json()
    assert stored["acknowledged_by"] == "Olga Oncall (link)"
    site.client.cookies.clear()

    # a second press, by anyone: it was already done, by whom and when
    again = site.client.post(f"/ack/{token}", data={"contact": "tina"})
    assert again.status_code == 200
    assert "Already acknowledged by <strong>Olga Oncall (link)</strong> at" in again.text


def test_the_ack_link_in_a_signed_in_browser_acknowledges_as_its_user(site: Site) -> None:
    site.login("rita")
    incident = site.declare("Checkout is down", severity=2)
    token = _ack_token(site, incident)
    page = site.client.get(f"/ack/{token}").text
    assert "You are acknowledging as <strong>rita</strong> (signed in)" in page
    assert "name=contact" not in page
    done = site.client.post(f"/ack/{token}", data={})
    assert "Acknowledged as <strong>rita</strong>" in done.text
    assert site.client.get(f"/api/v1/incidents/{incident}").json()["acknowledged_by"] == "rita"
