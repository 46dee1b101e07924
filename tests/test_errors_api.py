"""Projects and issues through the API, the CLI and the dashboard pages (real app, real store)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nachtwacht.auth import tokens
from nachtwacht.auth.audit import audit_log
from nachtwacht.cli.main import app as main_app
from nachtwacht.clock import FakeClock
from nachtwacht.errors import issues, service
from nachtwacht.store.db import Store
from tests.auth_helpers import add_user, fast_hashing, login  # noqa: F401 - fixture
from tests.test_errors_fixtures import (
    Server,
    add_project,
    envelope,
    exc_event,
    frame,
    msg_event,
    records,
    server,
)

PLACE = [frame("checkout", "place(order)"), frame("place", "raise ValueError(msg)")]
HTML = {"Accept": "text/html"}
runner = CliRunner()


def token(store: Store, clock: FakeClock, role: str) -> dict[str, str]:
    with store.begin() as conn:
        made = tokens.create_token(conn, f"t-{role}", role, clock.now(), actor="tests")
    return {"Authorization": f"Bearer {made['token']}"}


@pytest.fixture
def srv(store: Store, tmp_path: Path, clock: FakeClock) -> Server:
    with server(store, tmp_path, clock) as s:
        # two users: 42 (by id, a number in one event and a string in another; "{{auto}}" is
        # no address) and bob (by e-mail, which comes before the IP)
        users = {
            17: {"id": "42", "email": "ann@example.com"},
            4242: {"email": "bob@example.com", "ip_address": "10.0.0.1"},
            9: {"id": 42, "email": "ann@example.com", "ip_address": "{{auto}}"},
        }
        for i in (17, 4242, 9):
            r = s.client.post(
                f"/api/{s.project['id']}/envelope/",
                content=envelope(
                    exc_event(
                        value=f"order {i} is invalid",
                        frames=PLACE,
                        ts=clock.now() - 90,
                        tags={"tenant": "acme"},
                        user=users[i],
                        logger="shop.orders",
                    )
                ),
                headers=s.sentry(),
            )
            assert r.status_code == 200
        s.client.post(
            f"/api/{s.project['id']}/envelope/",
            content=envelope(msg_event("disk nearly full", timestamp=clock.now() - 30)),
            headers=s.sentry(),
        )
        assert s.drain() == 4
        yield s


def test_issues_api_lists_shows_and_changes_state_with_roles(srv: Server) -> None:
    viewer = token(srv.store, srv.clock, "viewer")
    responder = token(srv.store, srv.clock, "responder")
    r = srv.client.get("/api/v1/errors/issues", params={"sort": "count"}, headers=viewer)
    assert r.status_code == 200 and r.headers["X-Total-Count"] == "2"
    place, disk = r.json()
    assert (place["title"], place["count"], place["project"]) == (
        "ValueError: order 17 is invalid", 3, "shop",
    )  # fmt: skip
    assert sum(place["hours_24h"]) == 3 and len(place["hours_24h"]) == 24
    r = srv.client.get("/api/v1/errors/issues", params={"limit": 1}, headers=viewer)
    assert len(r.json()) == 1 and 'rel="next"' in r.headers["Link"]
    assert (
        srv.client.get("/api/v1/errors/issues", params={"query": "disk"}, headers=viewer).json()[0][
            "id"
        ]
        == disk["id"]
    )
    bad = srv.client.get("/api/v1/errors/issues", params={"status": "open"}, headers=viewer)
    assert bad.status_code == 422 and bad.json()["field"] == "status"
    bad = srv.client.get("/api/v1/errors/issues", params={"project": "nope"}, headers=viewer)
    assert bad.status_code == 404 and bad.json()["field"] == "project"

    shown = srv.client.get(f"/api/v1/errors/issues/{place['id']}", headers=viewer).json()
    assert shown["latest_event"]["tags"] == {"tenant": "acme"}
    assert [f["function"] for f in shown["latest_event"]["exceptions"][0]["frames"]] == [
        "checkout",
        "place",
    ]
    assert len(shown["recent_events"]) == 3 and sum(shown["days_14d"]) == 3
    assert srv.client.get("/api/v1/errors/issues/999", headers=viewer).status_code == 404

    # changes need a responder
    assert (
        srv.client.post(f"/api/v1/errors/issues/{place['id']}/resolve", headers=viewer).status_code
        == 403
    )
    r = srv.client.post(f"/api/v1/errors/issues/{place['id']}/resolve", headers=responder)
    assert r.status_code == 200 and r.json()["status"] == "resolved"
    assert r.json()["resolved_by"] == "token:t-responder"
    r = srv.client.post(f"/api/v1/errors/issues/{disk['id']}/ignore", headers=responder)
    assert r.json()["status"] == "ignored"
    listed = srv.client.get("/api/v1/errors/issues", headers=viewer).json()
    assert listed == []  # nothing unresolved left
    r = srv.client.get("/api/v1/errors/issues", params={"status": "all"}, headers=viewer)
    assert {i["status"] for i in r.json()} == {"resolved", "ignored"}
    with srv.store.connect() as conn:
        actions = {e["action"] for e in audit_log(conn) if e["actor"] == "token:t-responder"}
    assert {"error_issue.resolve", "error_issue.ignore"} <= actions


def test_projects_api_lists_for_viewers_and_adds_for_admins(srv: Server) -> None:
    viewer = token(srv.store, srv.clock, "viewer")
    responder = token(srv.store, srv.clock, "responder")
    admin = token(srv.store, srv.clock, "admin")
    [shop] = srv.client.get("/api/v1/projects", headers=viewer).json()
    assert shop["events"] == 4 and shop["issues"] == 2
    assert shop["dsn"] == f"http://{shop['public_key']}@testserver/{shop['id']}"
    assert (
        srv.client.post("/api/v1/projects", json={"name": "crm"}, headers=responder).status_code
        == 403
    )
    r = srv.client.post(
        "/api/v1/projects", json={"name": "crm", "environment": "production"}, headers=admin
    )
    assert r.status_code == 201, r.text
    crm = r.json()
    assert re.fullmatch(r"[0-9a-f]{32}", crm["public_key"])
    assert (
        srv.client.post("/api/v1/projects", json={"name": "crm"}, headers=admin).status_code == 409
    )
    r = srv.client.post("/api/v1/projects", json={"name": "bad name!"}, headers=admin)
    assert r.status_code == 422 and r.json()["field"] == "name"
    with srv.store.connect() as conn:
        assert [e["target"] for e in audit_log(conn, action="project.add")] == [
            f"project:{crm['id']}", f"project:{shop['id']}",
        ]  # fmt: skip
    # the new key works at once: adding through the API refreshes the ingestion's key cache
    r = srv.client.post(
        f"/api/{crm['id']}/envelope/",
        content=envelope(msg_event("hi")),
        headers=srv.sentry(crm["public_key"]),
    )
    assert r.status_code == 200
    assert srv.drain() == 1


def test_pages_list_show_and_resolve(srv: Server, fast_hashing: None) -> None:  # noqa: F811
    add_user(srv.store, srv.clock, "rita", "responder")
    add_user(srv.store, srv.clock, "vic", "viewer")
    client = srv.client
    csrf = login(client, "vic")
    page = client.get("/errors", headers=HTML)
    assert page.status_code == 200
    assert "ValueError: order 17 is invalid" in page.text and "disk nearly full" in page.text
    assert page.text.count('<svg class="spark"') == 2
    row = re.compile(
        r'data-issue="(\d+)" data-status="unresolved">\s*<td data-label="Issue">'
        r'<a class="issue-title" href="/errors/\d+">ValueError'
    )
    issue_id = int(row.search(page.text)[1])
    shown = client.get(f"/errors/{issue_id}", headers=HTML)
    assert shown.status_code == 200
    assert "raise ValueError(msg)" in shown.text and "tenant = acme" in shown.text
    assert '<dd id="issue-users">2</dd>' in shown.text
    assert re.search(r'<dd id="event-user">.*email = \w+@example\.com', shown.text)
    assert '<dd id="event-logger"><code>shop.orders</code></dd>' in shown.text
    assert "resolve-button" not in shown.text  # a viewer sees no actions
    assert client.get("/errors/999", headers=HTML).status_code == 404
    assert client.post(f"/errors/{issue_id}/resolve", data={"csrf_token": csrf}).status_code == 403

    csrf = login(client, "rita")
    shown = client.get(f"/errors/{issue_id}", headers=HTML)
    assert 'id="resolve-button"' in shown.text
    refused = client.post(f"/errors/{issue_id}/resolve", data={"csrf_token": "wrong"})
    assert refused.status_code == 403
    done = client.post(
        f"/errors/{issue_id}/resolve", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"] == f"/errors/{issue_id}"
    shown = client.get(f"/errors/{issue_id}", headers=HTML)
    assert 'data-status="resolved"' in shown.text and "by rita" in shown.text
    resolved = client.get("/errors", params={"status": "resolved"}, headers=HTML)
    assert f'data-issue="{issue_id}"' in resolved.text
    assert f'data-issue="{issue_id}"' not in client.get("/errors", headers=HTML).text
    missing = client.post("/errors/999/ignore", data={"csrf_token": csrf})
    assert missing.status_code == 404


def test_cli_project_add_list_and_errors_commands(
    sqlite_store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(
        f"store:\n  url: {sqlite_store.url}\nserver:\n  port: 8123\n"
        f"spool:\n  dir: {tmp_path / 'spool'}\n"
    )
    added = runner.invoke(
        main_app, ["project", "add", "erp", "--environment", "production", "-c", str(config)]
    )
    assert added.exit_code == 0, added.output
    dsn = added.output.strip()
    assert re.fullmatch(r"http://[0-9a-f]{32}@127\.0\.0\.1:8123/1", dsn), dsn
    dup = runner.invoke(main_app, ["project", "add", "erp", "-c", str(config)])
    assert dup.exit_code == 1 and "exists" in dup.output
    listed = json.loads(
        runner.invoke(main_app, ["project", "list", "--json", "-c", str(config)]).output
    )
    assert [(p["name"], p["dsn"], p["environment"]) for p in listed] == [("erp", dsn, "production")]
    assert "erp" in runner.invoke(main_app, ["project", "list", "-c", str(config)]).output

    # events through the real app into the same store
    with server(sqlite_store, tmp_path / "srv", clock) as s:
        key = dsn.split("//")[1].split("@")[0]
        for i in (1, 2):
            r = s.client.post(
                "/api/1/envelope/",
                content=envelope(
                    exc_event(value=f"order {i} is invalid", frames=PLACE, ts=clock.now() - 60)
                ),
                headers=s.sentry(key),
            )
            assert r.status_code == 200
        s.drain()
    out = runner.invoke(main_app, ["errors", "list", "-c", str(config)])
    assert out.exit_code == 0, out.output
    assert "ValueError: order 1 is invalid" in out.output and "[erp]" in out.output
    rows = json.loads(
        runner.invoke(main_app, ["errors", "list", "--json", "-c", str(config)]).output
    )
    issue_id = rows[0]["id"]
    assert rows[0]["count"] == 2 and rows[0]["environment"] == "production"
    shown = runner.invoke(main_app, ["errors", "show", str(issue_id), "-c", str(config)])
    assert (
        "* shop/orders.py:10 in place" in shown.output and "raise ValueError(msg)" in shown.output
    )
    detail = json.loads(
        runner.invoke(
            main_app, ["errors", "show", str(issue_id), "--json", "-c", str(config)]
        ).output
    )
    assert detail["latest_event"]["exceptions"][0]["type"] == "ValueError"
    assert (
        "resolved"
        in runner.invoke(main_app, ["errors", "resolve", str(issue_id), "-c", str(config)]).output
    )
    assert (
        "ignored"
        in runner.invoke(main_app, ["errors", "ignore", str(issue_id), "-c", str(config)]).output
    )
    assert (
        runner.invoke(main_app, ["errors", "list", "--json", "-c", str(config)]).output.strip()
        == "[]"
    )
    missing = runner.invoke(main_app, ["errors", "resolve", "999", "-c", str(config)])
    assert missing.exit_code == 2 and "no error issue #999" in missing.output
    bad = runner.invoke(main_app, ["errors", "list", "--status", "open", "-c", str(config)])
    assert bad.exit_code == 2 and "status must be" in bad.output
    with sqlite_store.connect() as conn:
        assert {e["action"] for e in audit_log(conn) if e["actor"].startswith("cli:")} >= {
            "project.add", "error_issue.resolve", "error_issue.ignore",
        }  # fmt: skip
    removed = runner.invoke(main_app, ["project", "remove", "erp", "--yes", "-c", str(config)])
    assert removed.exit_code == 0 and "1 issues, 2 events" in removed.output


def test_errors_list_has_column_headers_and_marks_regressions(
    sqlite_store: Store, tmp_path: Path
) -> None:
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(f"store:\n  url: {sqlite_store.url}\nspool:\n  dir: {tmp_path / 'spool'}\n")
    now = 1_800_000_000.0
    pid = add_project(sqlite_store)["id"]
    refund = [frame("refund", "raise ValueError(msg)")]
    with sqlite_store.begin() as conn:
        batch = records(
            pid,
            now,
            exc_event(value="order 1 is invalid", frames=PLACE, ts=now - 60),
            exc_event(value="refund 2 failed", frames=refund, ts=now - 50),
        )
        service.store_events(conn, batch, now)
    with sqlite_store.connect() as conn:
        rows, _ = issues.list_issues(conn, status=None, sort="count", limit=None)
    place = next(r for r in rows if r["title"].startswith("ValueError: order"))
    with sqlite_store.begin() as conn:
        issues.set_status(conn, place["id"], "resolve", "rita", now + 10)
        later = records(
            pid, now + 200, exc_event(value="order 3 is invalid", frames=PLACE, ts=now + 100)
        )
        service.store_events(conn, later, now + 200)

    out = runner.invoke(main_app, ["errors", "list", "-c", str(config)])
    assert out.exit_code == 0, out.output
    header, *lines = out.output.splitlines()
    assert header.split() == [
        "ID", "STATUS", "EVENTS", "LAST", "SEEN", "LAST", "24", "H", "[PROJECT]", "TITLE",
    ]  # fmt: skip
    by_title = {line.split("] ", 1)[1]: line.split() for line in lines}
    assert by_title["ValueError: order 1 is invalid"][1:3] == ["regressed", "2"]
    assert by_title["ValueError: refund 2 failed"][1:3] == ["unresolved", "1"]
    # the columns line up under their headers
    assert all(line.index("[shop]") == header.index("[PROJECT]") for line in lines)
    # JSON keeps the status as stored, with when it regressed
    listed = json.loads(
        runner.invoke(main_app, ["errors", "list", "--json", "-c", str(config)]).output
    )
    regressed = next(r for r in listed if r["id"] == place["id"])
    assert regressed["status"] == "unresolved" and regressed["regressed_at"]
