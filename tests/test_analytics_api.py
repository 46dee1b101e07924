"""/api/v1/analytics, /api/v1/baselines, /api/v1/flags, the Analytics page and the
`nachtwacht analytics` commands, through the real app (create_app) and the real CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from nachtwacht.analytics import flags
from nachtwacht.cli.main import app as cli
from nachtwacht.clock import FakeClock, SystemClock
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.auth_helpers import add_user, fast_hashing, login  # noqa: F401 - fixture
from tests.helpers import admin_token, settings_for
from tests.test_analytics_data import HOUR, add_hours, add_issue, add_probe, add_results

HTML = {"Accept": "text/html"}
SITE = """
site: analytics-test
timezone: America/New_York
probes:
  - {name: root-disk, kind: host, metric: disk, mount: /, component: host}
"""
runner = CliRunner()


@dataclass
class Site:
    client: TestClient
    store: Store
    clock: FakeClock
    admin: dict[str, str]
    viewer: dict[str, str]


def plant(store: Store, now: float) -> None:
    """Rising errors with a burst at 15:00 UTC (10:00 in New York), and a disk filling up."""
    last = int(now // HOUR)
    with store.begin() as conn:
        issue = add_issue(conn, "OperationalError: gone away", now - 9 * 86400, category="database")
        counts = {last - 167 + k: 1 + k // 24 for k in range(168)}
        burst = max(h for h in counts if (h * HOUR) % 86400 == 15 * HOUR)  # the latest 15:00
        counts[burst] += 80
        add_hours(conn, issue, counts)
        fresh = add_issue(conn, "KeyError: 'x'", now - 3600, environment="staging")
        add_hours(conn, fresh, {last: 2})
        disk = conn.execute(select(t.probes.c.id).where(t.probes.c.name == "root-disk")).scalar()
        add_results(conn, disk, [(now - k * 60, 80.0 - k * 0.05, None) for k in range(360)])


@pytest.fixture
def site(sqlite_store: Store, clock: FakeClock, fast_hashing: None) -> Iterator[Site]:  # noqa: F811
    app = create_app(settings_for(SITE, sqlite_store.url), sqlite_store, clock, start_engine=False)
    flags.invalidate()
    with TestClient(app) as client:
        plant(sqlite_store, clock.now())
        yield Site(
            client,
            sqlite_store,
            clock,
            {"Authorization": f"Bearer {admin_token(sqlite_store)}"},
            {"Authorization": f"Bearer {admin_token(sqlite_store, role='viewer')}"},
        )
    flags.invalidate()


def test_errors_and_forecast_endpoints(site: Site) -> None:
    c = site.client
    body = c.get("/api/v1/analytics/errors?days=7", headers=site.viewer).json()
    assert body["totals"]["events"] == sum(1 + k // 24 for k in range(168)) + 80 + 2
    # days of 24·(d+1) events, the last one with the burst and the staging pair: 250
    assert [d["count"] for d in body["daily"]] == [24, 48, 72, 96, 120, 144, 250]
    assert body["trend"]["direction"] == "rising"
    assert body["trend"]["slope"] == pytest.approx(918 / 28)  # Σ(x - x̄)·y / Σ(x - x̄)²
    assert body["hourly"]["peak_hour"] == 10  # New York time
    assert body["timezone"] == "America/New_York"
    assert len(body["spikes"]) == 1 and body["spikes"][0]["count"] >= 80
    assert body["cache"]["hit"] is False
    assert c.get("/api/v1/analytics/errors?days=7", headers=site.viewer).json()["cache"]["hit"]
    prod = c.get("/api/v1/analytics/errors?days=7&environment=production", headers=site.viewer)
    assert prod.json()["totals"]["issues"] == 1 and prod.json()["environments"] == ["production"]

    bad = c.get("/api/v1/analytics/errors?days=0", headers=site.viewer)
    assert bad.status_code == 422 and bad.json()["field"] == "days"

    fc = c.get("/api/v1/analytics/forecast", headers=site.viewer).json()
    [disk] = fc["disk"]
    assert disk["name"] == "root-disk" and disk["status"] == "filling"
    # 80 % used, 3 points an hour: 20 points left, full in about 6.7 h
    assert disk["hours_to_full"] == pytest.approx(20 / 3, abs=0.1)


def test_flags_api_switches_analytics_off_and_on_and_needs_an_admin(site: Site) -> None:
    c = site.client
    listed = c.get("/api/v1/flags", headers=site.viewer).json()["flags"]
    assert [f["name"] for f in listed] == [
        "disable_advanced_analytics",
        "enable_performance_optimization",
        "enable_security_logging",
    ]
    refused = c.put("/api/v1/flags", json={"disable_advanced_analytics": True}, headers=site.viewer)
    assert refused.status_code == 403
    unknown = c.put(
        "/api/v1/flags", json={"enable_security_logging": True, "nope": True}, headers=site.admin
    )
    assert unknown.status_code == 404 and unknown.json()["field"] == "nope"
    assert not any(
        f["enabled"] for f in c.get("/api/v1/flags", headers=site.viewer).json()["flags"]
    )

    on = c.put("/api/v1/flags", json={"disable_advanced_analytics": True}, headers=site.admin)
    assert on.status_code == 200
    off_answer = c.get("/api/v1/analytics/errors", headers=site.viewer).json()
    assert off_answer["disabled"] is True and "fallback mode" in off_answer["message"]
    assert c.get("/api/v1/analytics/forecast", headers=site.viewer).json()["disabled"] is True

    one = c.put(
        "/api/v1/flags/disable_advanced_analytics", json={"enabled": False}, headers=site.admin
    )
    assert one.status_code == 200 and one.json()["enabled"] is False
    assert "totals" in c.get("/api/v1/analytics/errors", headers=site.viewer).json()
    with site.store.connect() as conn:
        audited = conn.execute(
            select(func.count()).select_from(t.audit_log).where(t.audit_log.c.action == "flag.set")
        ).scalar_one()
    assert audited == 2


def test_baselines_api(site: Site) -> None:
    c = site.client
    with site.store.begin() as conn:
        api = add_probe(conn, "api", "http", "web")
        add_results(conn, api, [(site.clock.now() - k * 60, None, 100.0) for k in range(30)])
    made = c.post("/api/v1/baselines", json={"name": "calm", "window": "1h"}, headers=site.admin)
    assert made.status_code == 201, made.text
    assert made.json()["data"]["probes"]["api"]["p95"] == 100.0
    assert made.json()["captured_by"] == "token:test-admin"

    bad = c.post("/api/v1/baselines", json={"window": "soon"}, headers=site.admin)
    assert bad.status_code == 422 and bad.json()["field"] == "window"
    viewer = c.post("/api/v1/baselines", json={}, headers=site.viewer)
    assert viewer.status_code == 403

    [listed] = c.get("/api/v1/baselines", headers=site.viewer).json()["baselines"]
    assert listed["id"] == made.json()["id"] and listed["probes"] == 1
    report = c.get("/api/v1/baselines/compare", headers=site.viewer).json()
    assert report["ok"] is True and report["probes"][0]["status"] == "ok"
    missing = c.get("/api/v1/baselines/compare?against=77", headers=site.viewer)
    assert missing.status_code == 404 and missing.json()["field"] == "against"
    assert c.get(f"/api/v1/baselines/{listed['id']}", headers=site.viewer).status_code == 200
    assert c.get("/api/v1/baselines/77", headers=site.viewer).status_code == 404

    cleared = c.delete("/api/v1/analytics/cache?pattern=analytics_*", headers=site.admin).json()
    assert cleared["cleared"] >= 0


# ---------------------------------------------------------------------------- the page


def test_analytics_page_charts_tables_and_the_admin_flag_form(site: Site) -> None:
    add_user(site.store, site.clock, "ada", "admin")
    add_user(site.store, site.clock, "rita", "responder")
    add_user(site.store, site.clock, "vic", "viewer")
    c = site.client
    csrf = login(c, "ada")
    page = c.get("/analytics", headers=HTML)
    assert page.status_code == 200, page.text
    html = page.text
    data = json.loads(re.search(r'id="analytics-data"[^>]*>(.*?)</script>', html, re.S).group(1))
    assert data["daily"]["y"] == [24, 48, 72, 96, 120, 144, 250]
    assert data["daily"]["slope"] == pytest.approx(918 / 28)
    assert sum(data["hours"]) == sum(data["series"]["y"]) == 754
    assert data["hours"].index(max(data["hours"])) == 10
    assert 'id="peak-hour" data-hour="10"' in html
    assert 'data-direction="rising"' in html
    assert 'data-probe="root-disk" data-status="filling"' in html
    assert "there is no baseline yet" in html
    assert 'data-flag="disable_advanced_analytics" data-enabled="off"' in html
    assert "uPlot-1.6.32.iife.min.js" in html and "/static/analytics.js" in html

    switched = c.post(
        "/analytics/flags",
        data={"name": "disable_advanced_analytics", "enabled": "on", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert switched.status_code == 303 and switched.headers["location"] == "/analytics#flags"
    fallback = c.get("/analytics", headers=HTML).text
    assert 'id="analytics-disabled"' in fallback and 'id="analytics-data"' not in fallback
    assert 'data-flag="disable_advanced_analytics" data-enabled="on"' in fallback

    no_csrf = c.post("/analytics/flags", data={"name": "x", "enabled": "on"}, headers=HTML)
    assert no_csrf.status_code == 403

    captured = c.post(
        "/analytics/baselines", data={"name": "from the page", "csrf_token": csrf},
        follow_redirects=False,
    )  # fmt: skip
    assert captured.status_code == 303
    assert "“from the page”" in c.get("/analytics", headers=HTML).text

    responder_csrf = login(c, "rita")
    denied = c.post(
        "/analytics/flags",
        data={"name": "disable_advanced_analytics", "enabled": "off", "csrf_token": responder_csrf},
    )
    assert denied.status_code == 403 and "Only an admin can switch flags." in denied.text
    assert "Turn off" not in denied.text  # no toggles for a responder
    viewer_csrf = login(c, "vic")
    assert "Only admins can switch flags." in c.get("/analytics", headers=HTML).text
    viewer = c.post("/analytics/baselines", data={"csrf_token": viewer_csrf})
    assert viewer.status_code == 403  # a viewer changes nothing


# ---------------------------------------------------------------------------- CLI


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "nachtwacht.yaml"
    path.write_text(
        f"site: test\ntimezone: America/New_York\nstore:\n  url: sqlite:///{tmp_path / 'nw.db'}\n"
        "probes:\n  - {name: root-disk, kind: host, metric: disk, mount: /, component: host}\n"
    )
    return str(path)


def test_analytics_cli_human_and_json_output(config: str) -> None:
    store = Store(f"sqlite:///{Path(config).parent / 'nw.db'}")
    store.migrate()
    with store.begin() as conn:
        add_probe(conn, "root-disk", "host", "host", {"metric": "disk", "mount": "/"})
    plant(store, SystemClock().now())
    flags.invalidate()

    human = runner.invoke(cli, ["analytics", "errors", "--days", "7", "-c", config])
    assert human.exit_code == 0, human.output
    assert "Errors, last 7 days, all environments (America/New_York)" in human.output
    assert "trend      rising: +" in human.output and "per day per day" in human.output
    assert "OperationalError: gone away" in human.output
    as_json = json.loads(runner.invoke(cli, ["analytics", "errors", "--json", "-c", config]).output)
    assert as_json["trend"]["direction"] == "rising"

    forecast = runner.invoke(cli, ["analytics", "forecast", "--fresh", "-c", config])
    assert forecast.exit_code == 0, forecast.output
    assert re.search(r"root-disk \(/\)\s+80\.0 % used\s+full in 6\.[5-9] h", forecast.output)
    assert "(full at " in forecast.output
    fc_json = json.loads(
        runner.invoke(cli, ["analytics", "forecast", "--json", "-c", config]).output
    )
    assert fc_json["disk"][0]["status"] == "filling"
    store.dispose()
