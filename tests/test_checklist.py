"""`nachtwacht verify`: the Service Restoration Checklist against a real site.

The site is real: the dashboard served by uvicorn, a sql probe on a SQLite file, an http probe
on the dashboard, a redis probe on the local Redis, an SMTP server for the test notification.
Breaking one part (a probe's target down, the server stopped, a corrupted SQLite file, a
default password, analytics in fallback mode, no baseline) fails exactly the item it backs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import insert, select
from typer.testing import CliRunner

from nachtwacht.auth import passwords
from nachtwacht.checklist import items, service
from nachtwacht.checklist.items import Context, integrity_check
from nachtwacht.cli.main import app as cli
from nachtwacht.clock import FakeClock
from nachtwacht.incidents import service as incidents
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.auth_helpers import PASSWORD, add_user, fast_hashing  # noqa: F401 - fixture
from tests.conftest import closed_port, free_port, need_service
from tests.helpers import admin_token, settings_for
from tests.test_checklist_support import LiveApp, Mail, add_baseline, settings, site_yaml

pytestmark = pytest.mark.usefixtures("fast_hashing")
runner = CliRunner()
ALL = set(items.ITEMS)


@pytest.fixture
def mail() -> Iterator[Mail]:
    with Mail() as box:
        yield box


@pytest.fixture
def site(sqlite_store: Store, clock: FakeClock, tmp_path: Path, mail: Mail) -> Iterator[Context]:
    """A healthy site: server up, admin with a real password, a baseline, probes that pass."""
    need_service("Redis", "127.0.0.1", 6379)
    cfg = settings(sqlite_store, free_port(), mail.port, tmp_path / "app.db")
    (tmp_path / "app.db").touch()
    add_user(sqlite_store, clock, "admin", "admin")
    add_baseline(sqlite_store, clock.now())
    with LiveApp(cfg, sqlite_store, clock):
        yield Context(cfg, sqlite_store, clock, "tester")


def _items(run: dict) -> dict[str, dict]:
    return {i["item"]: i for i in run["items"]}


def _only(ctx: Context, *names: str, smtp: int = 2525) -> Context:
    """The same site with every other item skipped (to look at one item in isolation)."""
    skip = ", ".join(sorted(ALL - set(names)))
    text = site_yaml(
        ctx.settings.server.port, smtp, Path("/nonexistent.db"), False, f", skip: [{skip}]"
    )
    cfg = settings_for(text, ctx.store.url)
    return Context(cfg, ctx.store, ctx.clock, "tester")


def test_a_healthy_site_passes_every_item_and_records_the_run(site: Context, mail: Mail) -> None:
    with site.store.begin() as conn:
        incident = incidents.open_incident(
            conn, site.settings, title="db down", severity=1, now=site.clock.now()
        )
    site.incident_id = incident
    run = asyncio.run(service.verify(site))
    found = _items(run)
    assert set(found) == ALL
    failing = {k: v["detail"] for k, v in found.items() if not v["ok"] or v["skipped"]}
    assert failing == {} and run["passed"] is True
    assert "store-sql ok" in found["database"]["detail"]
    assert "dashboard-http ok" in found["web"]["detail"]
    assert "cache ok" in found["caches"]["detail"]
    assert "/login: login form" in found["dashboard"]["detail"]
    assert "0 engine modules" not in found["dashboard"]["detail"]
    assert "GET endpoints answered" in found["api"]["detail"]
    assert "integrity_check" in found["integrity"]["detail"]
    assert "anonymous API request refused (401)" in found["access"]["detail"]
    assert "baseline 'after-upgrade'" in found["performance"]["detail"]
    # the alert item really sent a message, to whoever is on call
    assert [m.rcpt_tos for m in mail.messages] == [["olga@example.org"]]
    # recorded: the run, and on the incident's timeline
    with site.store.connect() as conn:
        stored = service.list_runs(conn, incident)
        events = [e for e in incidents.timeline(conn, incident) if e["kind"] == "checklist"]
        tokens = conn.execute(select(t.api_tokens)).mappings().all()
    assert [r["id"] for r in stored] == [run["id"]] and stored[0]["passed"] is True
    assert events[0]["actor"] == "tester" and "passed" in events[0]["message"]
    # the dashboard item's token (for /healthz's details) and the API item's were made for
    # the check and revoked after it
    assert len(tokens) == 2 and {tk["role"] for tk in tokens} == {"viewer"}
    assert all(tk["revoked_at"] is not None for tk in tokens)


def test_a_probe_target_down_fails_its_item_and_the_checklist(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path, mail: Mail
) -> None:
    port = free_port()
    text = site_yaml(port, mail.port, tmp_path / "app.db", redis=False).replace(
        f"http://127.0.0.1:{port}/login", f"http://127.0.0.1:{closed_port()}/login"
    )
    cfg = settings_for(text, sqlite_store.url)
    (tmp_path / "app.db").touch()
    add_user(sqlite_store, clock, "admin", "admin")
    add_baseline(sqlite_store, clock.now())
    with LiveApp(cfg, sqlite_store, clock):
        run = asyncio.run(service.verify(Context(cfg, sqlite_store, clock, "tester")))
    found = _items(run)
    assert run["passed"] is False
    assert [k for k, v in found.items() if not v["ok"]] == ["web"]
    assert "dashboard-http critical" in found["web"]["detail"]
    assert "Connection refused" in found["web"]["detail"]


def test_without_a_running_server_the_dashboard_api_and_access_items_fail(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path, mail: Mail
) -> None:
    port = free_port()
    cfg = settings_for(
        site_yaml(port, mail.port, tmp_path / "app.db", redis=False), sqlite_store.url
    )
    (tmp_path / "app.db").touch()
    add_user(sqlite_store, clock, "admin", "admin")
    add_baseline(sqlite_store, clock.now())
    run = asyncio.run(service.verify(Context(cfg, sqlite_store, clock, "tester")))
    found = _items(run)
    failed = {k for k, v in found.items() if not v["ok"]}
    # the http probe points at the dashboard too
    assert failed == {"dashboard", "api", "access", "web"}
    assert f"does not answer at http://127.0.0.1:{port}" in found["dashboard"]["detail"]
    assert "no API answers" in found["api"]["detail"]
    # nothing was left behind: no token was created for an API that is not there
    with sqlite_store.connect() as conn:
        assert conn.execute(select(t.api_tokens)).all() == []


def test_verify_cli_prints_each_item_and_exits_non_zero_on_failure(
    site: Context, tmp_path: Path
) -> None:
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(
        f"store:\n  url: {site.store.url}\n"
        + site_yaml(
            site.settings.server.port,
            site.settings.notify.channels["mail"].port,
            tmp_path / "app.db",
        )
    )
    with site.store.begin() as conn:
        incident = incidents.open_incident(
            conn, site.settings, title="db down", severity=2, now=site.clock.now()
        )
    ok = runner.invoke(cli, ["verify", "--incident", str(incident), "-c", str(config)])
    assert ok.exit_code == 0, ok.output
    lines = ok.output.splitlines()
    assert sum(line.startswith("PASS  ") for line in lines) == 10
    assert lines[-1].endswith(f"on incident #{incident}: passed")

    as_json = runner.invoke(cli, ["verify", "--json", "-c", str(config)])
    assert as_json.exit_code == 0 and json.loads(as_json.output)["passed"] is True, as_json.output

    # a user with a default password breaks the access item: exit 1, the item named
    with site.store.begin() as conn:
        conn.execute(
            insert(t.users).values(
                username="bob",
                password_hash=passwords.hash_password("changeme"),
                role="responder",
                disabled=False,
                created_at=site.clock.now(),
                failed_logins=0,
            )
        )
    bad = runner.invoke(cli, ["verify", "-c", str(config)])
    assert bad.exit_code == 1
    assert "FAIL  Security access controls verified" in bad.output
    assert "user bob has a default password" in bad.output
    assert "FAILED (access)" in bad.output

    unknown = runner.invoke(cli, ["verify", "--incident", "999", "-c", str(config)])
    assert unknown.exit_code == 2 and "no incident 999" in unknown.output


def test_the_api_runs_the_checklist_in_the_server_and_lists_runs(site: Context) -> None:
    token = admin_token(site.store, site.clock.now())
    base = f"http://127.0.0.1:{site.settings.server.port}"
    headers = {"Authorization": f"Bearer {token}"}
    with site.store.begin() as conn:
        incident = incidents.open_incident(
            conn, site.settings, title="api down", severity=1, now=site.clock.now()
        )
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        made = client.post("/api/v1/checklist", json={"incident_id": incident})
        assert made.status_code == 201, made.text
        run = made.json()
        assert run["passed"] is True, run
        assert "(in-process)" in _items(run)["api"]["detail"]
        runs = client.get("/api/v1/checklist/runs", params={"incident": incident})
        assert [r["id"] for r in runs.json()] == [run["id"]]
        assert runs.headers["x-total-count"] == "1"
        missing = client.post("/api/v1/checklist", json={"incident_id": 4242})
        assert missing.status_code == 404
        assert missing.json() == {"detail": "no incident 4242", "field": "incident_id"}
        anonymous = httpx.post(f"{base}/api/v1/checklist", json={})
        assert anonymous.status_code == 401


def test_analytics_in_fallback_mode_fails_the_analytics_item(site: Context) -> None:
    ctx = _only(site, "analytics")
    assert asyncio.run(service.verify(ctx))["passed"] is True
    with site.store.begin() as conn:
        conn.execute(
            insert(t.flags).values(
                name="disable_advanced_analytics",
                enabled=True,
                updated_at=site.clock.now(),
                updated_by="tests",
            )
        )
    item = _items(asyncio.run(service.verify(ctx)))["analytics"]
    assert item["ok"] is False and "fallback mode" in item["detail"]


def test_an_unreachable_mail_server_fails_the_alert_item_on_its_first_attempt(
    site: Context,
) -> None:
    item = _items(asyncio.run(service.verify(_only(site, "alerts", smtp=closed_port()))))["alerts"]
    assert item["ok"] is False
    assert "test message to olga failed: mail:" in item["detail"], item["detail"]
    # the test message does not linger in the outbox, to be delivered in the middle of a night
    with site.store.connect() as conn:
        assert conn.execute(select(t.outbox.c.status)).scalars().all() == ["dead"]


def test_no_performance_baseline_yet_passes_the_item_saying_what_to_do(
    sqlite_store: Store, clock: FakeClock
) -> None:
    # a fresh install must be able to resolve an S1/S2 before its first baseline exists
    cfg = settings_for("probes: []\n", sqlite_store.url)
    ctx = Context(cfg, sqlite_store, clock, "tester")
    result = asyncio.run(items.performance(ctx))
    assert result.ok is True and result.detail.startswith("no baseline yet: one is captured")
    assert "nachtwacht baseline capture" in result.detail
    add_baseline(sqlite_store, clock.now())
    assert asyncio.run(items.performance(ctx)).ok is True


def test_skipped_items_are_reported_as_skipped_not_as_checked(site: Context) -> None:
    run = asyncio.run(service.verify(_only(site, "integrity")))
    found = _items(run)
    assert found["integrity"]["ok"] and not found["integrity"]["skipped"]
    assert all(found[k]["skipped"] for k in ALL - {"integrity"})


# -- the store's integrity check ----------------------------------------------------------------


def test_integrity_check_passes_on_every_backend(store: Store) -> None:
    ok, detail = integrity_check(store)
    assert ok, detail
    expected = {
        "sqlite": "integrity_check, foreign_key_check",
        "postgresql": "catalog",
        "mysql": "check table",
    }[store.dialect]
    assert expected in detail


def test_integrity_check_finds_a_corrupted_sqlite_file(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "corrupt.db"
    store = Store(f"sqlite:///{path}")
    store.migrate()
    with store.begin() as conn:
        conn.execute(
            insert(t.results),
            [
                {
                    "probe_id": i % 7,
                    "ts": clock.now() + i,
                    "minute": i,
                    "status": 0,
                    "message": "x" * 200,
                }
                for i in range(3000)
            ],
        )
    with store.connect() as conn:
        root = conn.exec_driver_sql(
            "SELECT rootpage FROM sqlite_master WHERE name = 'ix_results_probe_id_ts'"
        ).scalar_one()
        page_size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    assert integrity_check(store)[0] is True
    store.dispose()
    # overwrite the index's root page with garbage, past its 100-byte file header
    with path.open("r+b") as fh:
        fh.seek((root - 1) * page_size + 8)
        fh.write(b"\xa5" * (page_size - 8))
    broken = Store(f"sqlite:///{path}")
    try:
        ok, detail = integrity_check(broken)
        assert ok is False
        assert "integrity_check found" in detail or "malformed" in detail, detail
        result = asyncio.run(
            items.integrity(Context(settings_for("probes: []\n", broken.url), broken, clock))
        )
        assert result.ok is False
    finally:
        broken.dispose()


def test_an_unknown_test_contact_names_the_setting_that_chose_it(site: Context) -> None:
    skip = ", ".join(sorted(ALL - {"alerts"}))
    text = site_yaml(
        site.settings.server.port,
        2525,
        Path("/x.db"),
        False,
        f", skip: [{skip}], test_contact: zed",
    )
    ctx = Context(settings_for(text, site.store.url), site.store, site.clock, "tester")
    item = _items(asyncio.run(service.verify(ctx)))["alerts"]
    assert item["ok"] is False
    assert "no contact 'zed'" in item["detail"], item["detail"]
    assert "(reviews.checklist.test_contact)" in item["detail"], item["detail"]
