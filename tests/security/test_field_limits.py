"""Text fields are held to what a person writes (nachtwacht/limits.py), at every door.

A 50 MB `impact` was accepted, stored, paged and made the incident page 262 MB of HTML. Now a
text over its limit is a 422 naming the field and changes nothing, through the API, the
dashboard's forms and the CLI alike; Alertmanager's text is cut instead of refused (a refused
notification is an alert nobody hears of).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from nachtwacht.auth import ingest_keys
from nachtwacht.cli.main import app as cli
from nachtwacht.clock import FakeClock
from nachtwacht.config import limits
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.helpers import admin_token, settings_for

SITE = "site: fields\nprobes: []\n"
LONG = "x" * (limits.TEXT + 1)


def counts(store: Store) -> dict[str, int]:
    tables = (t.incidents, t.incident_events, t.alerts, t.outbox, t.maintenance, t.silences)
    with store.connect() as conn:
        return {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in tables
        }


@pytest.fixture
def client(sqlite_store: Store, clock: FakeClock) -> Iterator[TestClient]:
    app = create_app(settings_for(SITE, sqlite_store.url), sqlite_store, clock, start_engine=False)
    with TestClient(app) as c:
        c.headers["Authorization"] = f"Bearer {admin_token(sqlite_store, clock.now())}"
        yield c


@pytest.fixture
def incident(client: TestClient) -> int:
    answer = client.post("/api/v1/incidents", json={"title": "db is slow", "severity": 3})
    assert answer.status_code == 201
    return answer.json()["id"]


def ingest_key(store: Store, clock: FakeClock) -> str:
    with store.begin() as conn:
        return ingest_keys.create_ingest_key(conn, "src", "all", clock.now(), actor="t")["key"]


# (path, body, the field named): {id} is an open incident. Titles (300), maintenance and
# silence comments (10,000) had their limits already.
TOO_LONG: list[tuple[str, dict[str, Any], str]] = [
    ("/api/v1/incidents", {"title": "db down", "severity": 3, "impact": LONG}, "impact"),
    ("/api/v1/incidents", {"title": "db down", "severity": 3, "component": "c" * 121}, "component"),
    ("/api/v1/incidents/{id}/updates", {"message": LONG}, "message"),
    ("/api/v1/incidents/{id}/notes", {"text": LONG}, "text"),
    ("/api/v1/incidents/{id}/severity", {"severity": 2, "reason": LONG}, "reason"),
    ("/api/v1/incidents/{id}/escalate", {"reason": LONG}, "reason"),
    ("/api/v1/incidents/{id}/resolve", {"message": LONG}, "message"),
    ("/api/v1/runbooks/restart/runs", {"vars": {"unit": "u" * 257}}, "vars.unit"),
]


@pytest.mark.parametrize(("path", "body", "field"), TOO_LONG)
def test_a_text_over_its_limit_is_refused_naming_the_field_and_changes_nothing(
    client: TestClient,
    sqlite_store: Store,
    incident: int,
    path: str,
    body: dict[str, Any],
    field: str,
) -> None:
    before = counts(sqlite_store)
    answer = client.post(path.format(id=incident), json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field
    assert counts(sqlite_store) == before


def test_alert_titles_messages_and_labels_are_held_to_their_limits(
    client: TestClient, sqlite_store: Store, clock: FakeClock
) -> None:
    key = {"Authorization": f"Bearer {ingest_key(sqlite_store, clock)}"}
    cases = [
        ({"title": "t" * 301}, "title"),
        ({"title": "disk", "message": LONG}, "message"),
        ({"title": "disk", "labels": {"l" * 201: "v"}}, "labels"),
        ({"title": "disk", "labels": {"host": "v" * 1001}}, "labels"),
        ({"title": "disk", "labels": {f"k{i}": "v" for i in range(101)}}, "labels"),
    ]
    before = counts(sqlite_store)
    for body, field in cases:
        answer = client.post("/api/v1/alerts", json=body, headers=key)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["field"] == field
    assert counts(sqlite_store) == before


def test_alertmanager_text_is_cut_to_the_limits_not_refused(
    client: TestClient, sqlite_store: Store, clock: FakeClock
) -> None:
    key = {"Authorization": f"Bearer {ingest_key(sqlite_store, clock)}"}
    alert = {
        "status": "firing",
        "labels": {"alertname": "Big", "job": "j" * 500, "note": "n" * 5000},
        "annotations": {"summary": "s" * 5000, "description": "d" * 50_000},
        "fingerprint": "00000000000000aa",
    }
    answer = client.post("/api/v1/alerts/alertmanager", json={"alerts": [alert]}, headers=key)
    assert answer.status_code == 200, answer.text
    with sqlite_store.connect() as conn:
        row = conn.execute(select(t.alerts)).mappings().one()
        inc = conn.execute(select(t.incidents)).mappings().one()
    assert len(row["title"]) <= limits.TITLE and len(row["component"]) <= limits.NAME
    assert len(row["message"]) <= limits.TEXT + 30  # and "Source: ..." when there is one
    assert len(row["labels_json"]) < 2 * limits.LABEL_VALUE + 200
    assert len(inc["impact"]) <= limits.TEXT


def test_dashboard_forms_refuse_the_same_text_and_change_nothing(
    client: TestClient, sqlite_store: Store, incident: int
) -> None:
    before = counts(sqlite_store)
    for path, form in [
        ("update", {"message": LONG}),
        ("escalate", {"reason": LONG}),
        ("severity", {"severity": "2", "reason": LONG}),
        ("resolve", {"message": LONG}),
    ]:
        answer = client.post(
            f"/incidents/{incident}/{path}", data=form, headers={"Accept": "text/html"}
        )
        assert answer.status_code == 422, (path, answer.status_code)
        assert f"longer than {limits.TEXT} characters" in answer.text
    assert counts(sqlite_store) == before


def test_the_cli_refuses_the_same_text_and_changes_nothing(
    tmp_path: Path, sqlite_store: Store
) -> None:
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(f"store:\n  url: {sqlite_store.url}\n{SITE}", encoding="utf-8")
    run = CliRunner()
    c = ["-c", str(config)]
    ok = run.invoke(cli, ["incident", "declare", "--title", "db slow", "-s", "3", *c])
    assert ok.exit_code == 0, ok.output
    before = counts(sqlite_store)
    for args, field in [
        (["incident", "declare", "--title", "t" * 301, "-s", "3"], "title"),
        (["incident", "declare", "--title", "db down", "-s", "3", "--impact", LONG], "impact"),
        (["incident", "update", "1", "--message", LONG], "message"),
        (["incident", "note", "1", LONG], "text"),
        (["incident", "escalate", "1", "--reason", LONG], "reason"),
        (["incident", "resolve", "1", "--message", LONG], "message"),
    ]:
        refused = run.invoke(cli, [*args, *c])
        assert refused.exit_code == 2, (args[:2], refused.output)
        assert f"{field} is longer than" in refused.output
    assert counts(sqlite_store) == before
