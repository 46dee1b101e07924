"""The security report (issue 17): its contents from rows put straight into the tables, the
comparison with the previous period or the last report, its three formats with hostile strings
from log lines, `nachtwacht security report`, /api/v1/security/report and the Security page."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, func, insert, select
from typer.testing import CliRunner

from nachtwacht.auth.audit import audit
from nachtwacht.cli.main import app as cli
from nachtwacht.clock import FakeClock
from nachtwacht.security import report as security_report
from nachtwacht.security.models import SecuritySettings, Source
from nachtwacht.security.report_render import markdown, md, render
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.helpers import admin_token, settings_for

DAY = 86400.0
HOSTILE_PATH = "/<script>alert('path')</script>"
HOSTILE_USER = "<script>alert('user')</script>"
HOSTILE_KEY = "user:<img src=x onerror=alert(1)>"
UTC_ZONE = ZoneInfo("UTC")


def day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def finding(
    conn: Connection,
    rule: str,
    key: str,
    at: float,
    severity: int = 3,
    incident_id: int | None = None,
    source: str = "security",
) -> None:
    conn.execute(
        insert(t.alerts).values(
            fingerprint=f"security:{rule}:{key}" if source == "security" else f"probe:{key}",
            source=source,
            title=f"{rule}: {key}",
            component="security",
            severity=severity,
            status="firing",
            started_at=at,
            fired_at=at,
            last_seen=at,
            incident_id=incident_id,
            labels_json=json.dumps({"rule": rule, "key": key}),
        )
    )


def tally(conn: Connection, at: float, kind: str, key: str, n: int) -> None:
    conn.execute(
        insert(t.security_tallies).values(day=day(at), kind=kind, key=key, n=n, last_ts=at)
    )


def block(
    conn: Connection, address: str, at: float, state: str, expires: float | None = None
) -> None:
    conn.execute(
        insert(t.security_blocks).values(
            address=address,
            reason=f"finding for {address}",
            created_by="alice",
            created_at=at,
            expires_at=expires,
            state=state,
            rule="failed_login",
        )
    )


BRUTE, SCANNER, OLD = "203.0.113.5", "198.51.100.7", "192.0.2.99"


def seed(conn: Connection, now: float) -> None:
    """A week with a brute force that got in, a scanner, and an address from the week before."""
    finding(conn, "failed_login", BRUTE, now - 3600, 2, incident_id=7)
    finding(conn, "brute_force_success", BRUTE, now - 3500, 1, incident_id=7)
    finding(conn, "failed_login_account", "user:admin", now - 3600, 2)
    finding(conn, "scanner_404", SCANNER, now - 2 * DAY, 3)
    finding(conn, "probe_paths", SCANNER, now - 2 * DAY + 60, 3)
    finding(conn, "unauthorized", OLD, now - 3 * DAY, 3)
    finding(conn, "rate_limit", OLD, now - 10 * DAY, 3)  # the week before
    finding(conn, "db-port", "db-port", now - 3600, 2, source="probe")  # not a security alert
    # the security-incident drill's synthetic finding: not a finding either
    conn.execute(
        insert(t.alerts).values(
            fingerprint="drill:1:0", source="security", title="DRILL brute force then login",
            component="security", severity=1, status="firing", started_at=now - 600,
            fired_at=now - 600, last_seen=now - 600, drill_id=1,
        )
    )  # fmt: skip
    tally(conn, now - 3600, "failed_login", BRUTE, 30)
    tally(conn, now - 3600, "failed_login", "user:admin", 25)
    tally(conn, now - 3600, "failed_login", "user:root", 5)
    tally(conn, now - 2 * DAY, "failed_login", "user:ghost", 4)  # a log naming only accounts
    tally(conn, now - 3500, "login", BRUTE, 1)
    tally(conn, now - 3500, "login", "user:admin", 1)
    tally(conn, now - 2 * DAY, "not_found", SCANNER, 120)
    tally(conn, now - 2 * DAY, "probe_path", "/.env", 12)
    tally(conn, now - 2 * DAY, "probe_path", "/wp-login.php", 8)
    tally(conn, now - 2 * DAY, "not_found", "/wp-login.php", 8)
    tally(conn, now - 2 * DAY, "refused", "(other)", 40)
    tally(conn, now - 10 * DAY, "failed_login", OLD, 9)
    block(conn, BRUTE, now - 3400, "active", now + 20 * 3600)
    block(conn, "198.51.100.0/24", now - 60, "pending", now + 3600)
    block(conn, "192.0.2.1", now - 2 * DAY, "removed", now - DAY)
    block(conn, "192.0.2.2", now - 10 * DAY, "removed", now - 9 * DAY)
    audit(conn, "alice", "login.success", "alice", None, "10.0.0.1", now - 7200)
    for i in range(3):
        audit(conn, "mallory", "login.failed", "mallory", None, "10.6.6.6", now - 7000 + i)
    audit(conn, "alice", "user.add", "bob", {"role": "responder"}, "10.0.0.1", now - 6000)
    audit(conn, "alice", "token.create", "token:3", {"name": "ci"}, "10.0.0.1", now - 5000)
    audit(conn, "token:ci", "api.POST", "/api/v1/silences", {"status": 201}, None, now - 4000)
    audit(conn, "alice", "login.success", "alice", None, "10.0.0.1", now - 9 * DAY)


def test_the_report_counts_findings_addresses_paths_logins_blocks_and_audit(
    store: Store, clock: FakeClock
) -> None:
    now = clock.now()
    with store.begin() as conn:
        seed(conn, now)
    with store.connect() as conn:
        rep = security_report.build(conn, now, 7)

    assert rep.window.since == now - 7 * DAY and rep.window.until == now
    assert rep.findings == 6  # the week before and the probe alert are not in it
    rules = {r.rule: (r.findings, r.keys, r.severity) for r in rep.by_rule}
    assert rules["failed_login"] == (1, 1, 2)
    assert rep.by_rule[0].rule == "brute_force_success"  # the worst severity first
    assert "rate_limit" not in rules
    by_address = {a.address: a for a in rep.by_address}
    assert set(by_address) == {BRUTE, SCANNER, OLD}  # accounts are not addresses
    assert by_address[BRUTE].rules == ["brute_force_success", "failed_login"]
    assert by_address[BRUTE].blocked and not by_address[OLD].blocked
    assert by_address[SCANNER].blocked  # inside the pending /24
    # two findings each: the one with more events first
    assert [a.address for a in rep.top_addresses][:3] == [SCANNER, BRUTE, OLD]
    assert by_address[SCANNER].events == 120
    assert "(other)" not in {a.address for a in rep.top_addresses}
    paths = {p.path: (p.n, sorted(p.kinds)) for p in rep.top_paths}
    assert paths == {
        # 8 requests, each tallied as a probe path and as a 404: 8, not 16
        "/wp-login.php": (8, ["not_found", "probe_path"]),
        "/.env": (12, ["probe_path"]),
    }
    assert rep.top_paths[0].path == "/.env"
    now_counts = {d.name: d.now for d in rep.changes.deltas}
    # the scanner's 120 404s are tallied under its address too: counted once, by path
    assert (now_counts["not found (404)"], now_counts["probe paths"]) == (8, 20)

    lg = rep.logins
    # per day the larger of the address rows and the account rows (which count them again)
    assert (lg.failed, lg.ok) == (34, 1)
    per_day = {d.day: (d.failed, d.ok) for d in lg.per_day}
    assert per_day[day(now - 3600)] == (30, 1) and len(lg.per_day) == 8
    assert per_day[day(now - 2 * DAY)] == (4, 0)
    assert [(c.name, c.n) for c in lg.failed_accounts] == [("admin", 25), ("root", 5), ("ghost", 4)]
    assert [(c.name, c.n) for c in lg.failed_addresses] == [(BRUTE, 30)]
    assert [(c.name, c.n) for c in lg.ok_accounts] == [("admin", 1)]

    assert [b.address for b in rep.blocks_in_force] == ["198.51.100.0/24", BRUTE]
    assert rep.blocks_in_force_count == 2
    assert {b.address for b in rep.blocks_made} == {"198.51.100.0/24", BRUTE, "192.0.2.1"}

    groups = {c.name: c.n for c in rep.audit.by_group}
    assert groups == {
        "logins": 1,
        "failed logins": 3,
        "users and roles": 1,
        "tokens and keys": 1,
        "API changes": 1,
    }
    assert rep.audit.total == 7
    assert [e.action for e in rep.audit.notable] == [
        "token.create",
        "user.add",
        *["login.failed"] * 3,
    ]
    recent = rep.recent_findings[0]
    assert (recent.rule, recent.key, recent.incident_id) == ("brute_force_success", BRUTE, 7)


def test_without_a_report_before_it_compares_with_the_previous_period(
    sqlite_store: Store, clock: FakeClock
) -> None:
    now = clock.now()
    with sqlite_store.begin() as conn:
        seed(conn, now)
    with sqlite_store.connect() as conn:
        ch = security_report.build(conn, now, 7).changes
    assert ch.basis == "period" and ch.last_report_at is None
    assert (ch.baseline.since, ch.baseline.until) == (now - 14 * DAY, now - 7 * DAY)
    assert ch.new_addresses == sorted([BRUTE, SCANNER])  # OLD was seen the week before
    assert ch.new_rules == [
        "brute_force_success",
        "failed_login",
        "failed_login_account",
        "probe_paths",
        "scanner_404",
        "unauthorized",
    ]
    assert ch.gone_rules == ["rate_limit"]
    deltas = {d.name: (d.before, d.now) for d in ch.deltas}
    assert deltas["findings"] == (1, 6)
    assert deltas["failed logins"] == (9, 34)
    assert deltas["blocks made"] == (1, 3)
    assert deltas["offending addresses"] == (1, 3)


def test_after_a_report_the_next_compares_with_the_window_ending_at_it(
    sqlite_store: Store, clock: FakeClock
) -> None:
    first = clock.now()
    with sqlite_store.begin() as conn:
        seed(conn, first)
        rep = security_report.build(conn, first, 7)
        security_report.record(conn, rep, "cli:alice", first, "md")
    clock.advance(2 * DAY)
    now = clock.now()
    newcomer = "2001:db8::bad"
    with sqlite_store.begin() as conn:
        finding(conn, "probe_paths", newcomer, now - 600)
    with sqlite_store.connect() as conn:
        ch = security_report.build(conn, now, 7).changes
        entries = conn.execute(
            select(t.audit_log.c.actor, t.audit_log.c.target).where(
                t.audit_log.c.action == "security.report"
            )
        ).all()
    assert entries == [("cli:alice", "7d")]
    assert ch.basis == "report" and ch.last_report_at == first
    assert (ch.baseline.since, ch.baseline.until) == (first - 7 * DAY, first)
    assert ch.new_addresses == [newcomer]
    assert ch.new_rules == []
    # two days on, the window still holds the six findings before the report, and one more
    assert {d.name: (d.before, d.now) for d in ch.deltas}["findings"] == (6, 7)


def hostile(conn: Connection, now: float) -> None:
    tally(conn, now - 60, "probe_path", HOSTILE_PATH, 3)
    tally(conn, now - 60, "probe_path", "/" + "a" * 5000, 1)
    tally(conn, now - 60, "failed_login", "user:" + HOSTILE_USER, 6)
    tally(conn, now - 60, "failed_login", "10.9.9.9\u202e<b>", 6)
    finding(conn, "failed_login_account", HOSTILE_KEY, now - 60, 2)
    block(conn, "10.9.9.9", now - 30, "active")
    conn.execute(
        t.security_blocks.update()
        .where(t.security_blocks.c.address == "10.9.9.9")
        .values(reason="<iframe src=//evil>")
    )


def test_each_format_shows_the_report_and_escapes_what_came_from_log_lines(
    sqlite_store: Store, clock: FakeClock
) -> None:
    now = clock.now()
    with sqlite_store.begin() as conn:
        seed(conn, now)
        hostile(conn, now)
    with sqlite_store.connect() as conn:
        rep = security_report.build(conn, now, 7)

    html = render(rep, "html", "night <shift>", UTC_ZONE)
    assert html.startswith("<!doctype html>") and "<script" not in html
    assert "<iframe" not in html and "<img" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(&#39;path&#39;)&lt;/script&gt;" in html
    assert "&lt;script&gt;alert(&#39;user&#39;)&lt;/script&gt;" in html
    assert "night &lt;shift&gt;" in html
    assert "\u202e" not in html and "a" * 200 not in html and "a" * 150 in html
    assert "<link" not in html and "<style>" in html  # self-contained

    text = render(rep, "md", "night-shift", UTC_ZONE)
    assert text.startswith("# Security report · night-shift · last 7 days")
    for heading in ("## What changed", "## Findings by rule (7)", "## Top paths", "## Logins"):
        assert heading in text
    assert "<script" not in text and "<img" not in text and "<iframe" not in text
    assert "/&lt;script&gt;alert\\('path'\\)" not in text  # parentheses stay as they are
    assert "/&lt;script&gt;alert('path')&lt;/script&gt;" in text
    assert md("a|b [x](javascript:y) *z*") == "a\\|b \\[x\\](javascript:y) \\*z\\*"
    assert "| brute\\_force\\_success |" in text

    data = json.loads(render(rep, "json", "night-shift", UTC_ZONE))
    assert data["findings"] == 7 and data["window"]["until"] == "2027-01-15T08:00:00Z"
    assert HOSTILE_PATH in {p["path"] for p in data["top_paths"]}  # JSON keeps the data
    assert data["changes"]["basis"] == "period"
    assert data["health"]["state"] == "off"
    with pytest.raises(ValueError, match="unknown format"):
        render(rep, "pdf", "x", UTC_ZONE)


def test_the_detector_health_says_behind_when_its_last_good_tick_is_old(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"x" * 1000)
    st = os.stat(log)
    settings = SecuritySettings(
        sources=[Source(name="web", kind="nginx", path=str(log))], interval=10.0
    )
    now = clock.now()
    with sqlite_store.connect() as conn:
        assert security_report.health(conn, settings, now).state == "waiting"
        assert security_report.health(conn, SecuritySettings(), now).state == "off"
    with sqlite_store.begin() as conn:
        conn.execute(
            insert(t.module_health).values(
                module="security",
                instance="h:1",
                last_tick=now - 5,
                last_ok=now - 5,
                consecutive_errors=0,
            )
        )
        sqlite_store.set_meta(
            conn,
            "security.web",
            {"dev": st.st_dev, "inode": st.st_ino, "offset": 400, "rotated": []},
            now,
        )
    with sqlite_store.connect() as conn:
        ok = security_report.health(conn, settings, now)
        assert ok.state == "ok" and ok.sources[0].behind_bytes == 600
        assert "600 bytes not read yet" in ok.sources[0].note
        # 30 s is the least "three intervals" can be: the engine persists health every 15 s
        assert security_report.health(conn, settings, now + 24).state == "ok"
        behind = security_report.health(conn, settings, now + 26)
        assert behind.state == "behind"
    with sqlite_store.begin() as conn:
        conn.execute(
            t.module_health.update().values(
                last_tick=now, last_error="SecurityLogError: access.log: gone", consecutive_errors=2
            )
        )
    with sqlite_store.connect() as conn:
        failing = security_report.health(conn, settings, now + 10)
    assert failing.state == "failing" and "gone" in (failing.last_error or "")
    text = markdown(
        security_report.Report(**{**vars(_empty(sqlite_store, now)), "health": failing}),
        "s",
        UTC_ZONE,
    )
    assert "**failing**" in text and "gone" in text
    # a log missing from the first tick on: no good tick ever, yet it ticks: failing
    with sqlite_store.begin() as conn:
        conn.execute(t.module_health.update().values(last_ok=None, last_tick=now + 60))
    with sqlite_store.connect() as conn:
        assert security_report.health(conn, settings, now + 65).state == "failing"
        assert security_report.health(conn, settings, now + 100).state == "behind"  # stopped


def _empty(store: Store, now: float) -> security_report.Report:
    with store.connect() as conn:
        return security_report.build(conn, now, 1)


def test_days_out_of_range_is_refused(sqlite_store: Store, clock: FakeClock) -> None:
    with sqlite_store.connect() as conn, pytest.raises(ValueError, match="between 1 and 366"):
        security_report.build(conn, clock.now(), 0)


# -- the doors -----------------------------------------------------------------------------------

runner = CliRunner()


def test_the_cli_writes_each_format_and_records_each_report(tmp_path: Path) -> None:
    db = tmp_path / "nw.db"
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(f'site: cli-site\nstore:\n  url: "sqlite:///{db}"\n', encoding="utf-8")
    store = Store(f"sqlite:///{db}")
    store.migrate()
    now = time.time()  # the command reads the real clock; the rows sit well inside its window
    with store.begin() as conn:
        seed(conn, now)
        hostile(conn, now)

    out = runner.invoke(cli, ["security", "report", "--format", "json", "--config", str(config)])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["days"] == 7 and data["findings"] == 7
    assert data["changes"]["basis"] == "period"

    target = tmp_path / "out" / "report.html"
    made = runner.invoke(
        cli,
        ["security", "report", "--days", "30", "--format", "html", "--output", str(target)]
        + ["--actor", "alice", "--config", str(config)],
    )
    assert made.exit_code == 0, made.output
    html = target.read_text()
    assert "last 30 days" in html and "<script" not in html

    again = runner.invoke(cli, ["security", "report", "--config", str(config)])
    assert again.exit_code == 0 and again.stdout.startswith("# Security report · cli-site")
    assert "Compared with the last report" in again.stdout

    bad = runner.invoke(cli, ["security", "report", "--format", "pdf", "--config", str(config)])
    assert bad.exit_code == 2 and "--format must be md, html or json" in bad.output
    zero = runner.invoke(cli, ["security", "report", "--days", "0", "--config", str(config)])
    assert zero.exit_code == 2
    with store.connect() as conn:
        a = t.audit_log.c
        entries = conn.execute(
            select(a.actor, a.target).where(a.action == "security.report").order_by(a.id)
        ).all()
        assert conn.execute(select(func.count()).select_from(t.audit_log)).scalar() == 11
    assert [e[1] for e in entries] == ["7d", "30d", "7d"]
    assert entries[1][0] == "cli:alice" and entries[0][0].startswith("cli:")  # else $USER
    store.dispose()


SITE = "site: web-site\nprobes: []\n"


@pytest.fixture
def app_client(sqlite_store: Store, clock: FakeClock) -> Iterator[tuple[TestClient, Any]]:
    settings = settings_for(SITE, sqlite_store.url)
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    with TestClient(app) as client:
        yield client, clock


def test_the_api_answers_a_viewer_and_records_a_report_generated_by_a_responder(
    sqlite_store: Store, app_client: tuple[TestClient, Any]
) -> None:
    client, clock = app_client
    with sqlite_store.begin() as conn:
        seed(conn, clock.now())
    viewer = {"Authorization": f"Bearer {admin_token(sqlite_store, clock.now(), 'viewer')}"}
    assert client.get("/api/v1/security/report").status_code == 401
    plain = client.get("/api/v1/security/report", headers=viewer)
    assert plain.status_code == 200, plain.text
    body = plain.json()
    assert body["days"] == 7 and body["findings"] == 6
    assert body["blocks_in_force_count"] == 2
    one = client.get("/api/v1/security/report", params={"days": 1}, headers=viewer).json()
    assert one["days"] == 1 and one["findings"] == 3
    bad = client.get("/api/v1/security/report", params={"days": 0}, headers=viewer)
    assert bad.status_code == 422
    with sqlite_store.connect() as conn:  # a read is not a report
        assert security_report.last_report_at(conn, clock.now()) is None

    text = client.get("/api/v1/security/report", params={"format": "md"}, headers=viewer)
    assert text.headers["content-type"].startswith("text/markdown")
    assert text.text.startswith("# Security report · web-site · last 7 days")
    page = client.get("/api/v1/security/report", params={"format": "html"}, headers=viewer)
    assert page.headers["content-type"].startswith("text/html")
    assert "sha256-" in page.headers["content-security-policy"]

    # generating one (POST) is a responder's, and is recorded
    assert client.post("/api/v1/security/report", headers=viewer).status_code == 403
    responder = {"Authorization": f"Bearer {admin_token(sqlite_store, clock.now(), 'responder')}"}
    made = client.post("/api/v1/security/report", params={"days": 1}, headers=responder)
    assert made.status_code == 200, made.text
    assert made.json()["changes"]["basis"] == "period"
    clock.advance(60)
    after = client.get("/api/v1/security/report", headers=viewer).json()["changes"]
    assert after["basis"] == "report" and after["last_report_at"] == "2027-01-15T08:00:00Z"
    with sqlite_store.connect() as conn:
        a = t.audit_log.c
        rows = conn.execute(select(a.actor, a.target).where(a.action == "security.report")).all()
    assert rows == [("token:test-responder", "1d")]


def test_the_security_page_shows_the_report_blocks_findings_and_health(
    sqlite_store: Store, app_client: tuple[TestClient, Any]
) -> None:
    client, clock = app_client
    now = clock.now()
    with sqlite_store.begin() as conn:
        seed(conn, now)
        hostile(conn, now)
        conn.execute(
            insert(t.module_health).values(
                module="security",
                instance="h:1",
                last_tick=now - 120,
                last_ok=now - 300,
                last_error="SecurityLogError: /var/log/nginx/access.log: no such file",
                last_error_at=now - 120,
                consecutive_errors=12,
            )
        )
    viewer = {"Authorization": f"Bearer {admin_token(sqlite_store, now, 'viewer')}"}
    page = client.get("/security", headers={**viewer, "Accept": "text/html"})
    assert page.status_code == 200, page.text
    html = page.text
    assert 'href="/security" aria-current="page"' in html
    assert 'id="behind"' in html and "no such file" in html
    assert 'data-state="behind"' in html
    assert '<a href="/incidents/7">incident #7</a>' in html
    assert f'data-address="{BRUTE}"' in html
    assert "<script>alert" not in html and "&lt;script&gt;alert(&#39;path&#39;)" in html
    assert '<option value="30"' in html
    month = client.get("/security?days=30", headers={**viewer, "Accept": "text/html"})
    assert month.status_code == 200 and "last 30 days" in month.text
    assert client.get("/security?days=999", headers=viewer).status_code == 422
    anonymous = client.get("/security", headers={"Accept": "text/html"}, follow_redirects=False)
    assert anonymous.status_code in (302, 303, 307) and "/login" in anonymous.headers["location"]


def test_sources_without_a_file_show_in_the_health_without_a_lag(
    sqlite_store: Store, clock: FakeClock
) -> None:
    """The Activity Log (read by cursor) and the own security log (no path: the configured
    one) have no file position to compare: the page says so instead of failing."""
    settings = SecuritySettings(
        sources=[
            Source(name="erp", kind="frappe_activity", url="mysql+pymysql://u@127.0.0.1/db"),
            Source(name="own", kind="nachtwacht"),
        ]
    )
    with sqlite_store.begin() as conn:
        sqlite_store.set_meta(conn, "security.erp", {"creation": "2027-01-15", "name": "x"}, 0)
    with sqlite_store.connect() as conn:
        got = security_report.health(conn, settings, clock.now())
    assert [(s.name, s.path, s.behind_bytes, s.note) for s in got.sources] == [
        ("erp", "frappe_activity", None, "read up to its stored cursor"),
        ("own", "nachtwacht", None, "not read yet"),
    ]
