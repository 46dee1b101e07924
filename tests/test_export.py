"""`nachtwacht export`: a known data set in, the documented JSON out, on every backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nachtwacht.backup import export as ex
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.test_backup_fill import row_for

T = 1_800_000_000.0  # 2027-01-15T08:00:00Z
SINCE, UNTIL = T - 3600, T


def _insert(store: Store, table: Any, rows: list[dict[str, Any]]) -> None:
    with store.begin() as conn:
        for i, row in enumerate(rows):
            conn.execute(table.insert().values({**row_for(table, i), **row}))


@pytest.fixture
def data(store: Store) -> Store:
    config = {"kind": "sql", "url": "postgresql://app:s3/cret@db:5432/app", "query": "SELECT 1"}
    _insert(
        store,
        t.probes,
        [
            {"id": 1, "name": "db", "kind": "sql", "config_json": json.dumps(config)},
            {"id": 2, "name": "web", "kind": "http", "config_json": "{}"},
        ],
    )
    _insert(
        store,
        t.results,
        [
            {"id": i + 1, "probe_id": 1, "ts": ts, "status": status, "message": f"r{i}"}
            for i, (ts, status) in enumerate(
                [(T - 7200, 0), (SINCE, 2), (T - 60.25, 0), (UNTIL, 1), (T + 10, 0)]
            )
        ],
    )
    _insert(store, t.state_changes, [{"id": 1, "probe_id": 1, "ts": SINCE, "status": 2}])
    _insert(
        store,
        t.alerts,
        [
            {"id": 1, "fired_at": T - 5000, "resolved_at": T - 4000, "title": "old"},
            {
                "id": 2,
                "fired_at": T - 1000,
                "resolved_at": None,
                "title": "firing",
                "labels_json": json.dumps({"team": "ops"}),
            },
            {"id": 3, "fired_at": T - 5000, "resolved_at": T - 3000, "title": "spans since"},
        ],
    )
    _insert(
        store,
        t.incidents,
        [
            {
                "id": 1,
                "title": "db down",
                "started_at": T - 1000,
                "resolved_at": None,
                "ack_token": "secret-ack-token-1",
            },
            {
                "id": 2,
                "title": "yesterday",
                "started_at": T - 90000,
                "resolved_at": T - 80000,
                "ack_token": "secret-ack-token-2",
            },
        ],
    )
    _insert(
        store,
        t.incident_events,
        [
            {"id": 1, "incident_id": 1, "ts": T - 900, "kind": "acknowledged", "data_json": None},
            {
                "id": 2,
                "incident_id": 1,
                "ts": T - 1000,
                "kind": "opened",
                "data_json": json.dumps({"severity": 1}),
            },
            {"id": 3, "incident_id": 1, "ts": T + 100, "kind": "resolved", "data_json": None},
            {"id": 4, "incident_id": 2, "ts": T - 90000, "kind": "opened", "data_json": None},
        ],
    )
    _insert(
        store,
        t.error_issues,
        [
            {"id": 1, "first_seen": T - 10000, "last_seen": T - 100, "title": "KeyError: 'x'"},
            {"id": 2, "first_seen": T - 10000, "last_seen": T - 7200, "title": "stale"},
        ],
    )
    _insert(
        store,
        t.error_events,
        [
            {"id": 1, "issue_id": 1, "ts": T - 100, "data_json": json.dumps({"exception": "ü"})},
            {"id": 2, "issue_id": 2, "ts": T - 7200},
        ],
    )
    return store


def test_export_writes_the_documented_format_for_a_range(data: Store, tmp_path: Path) -> None:
    out = tmp_path / "export" / "nachtwacht.json"
    counts = ex.export(data, out, since=SINCE, until=UNTIL, now=T + 5, site="test-site")
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["format"] == "nachtwacht-export" and doc["format_version"] == 1
    assert doc["site"] == "test-site"
    assert (doc["since"], doc["since_epoch"]) == ("2027-01-15T07:00:00.000Z", SINCE)
    assert (doc["until"], doc["until_epoch"]) == ("2027-01-15T08:00:00.000Z", UNTIL)
    assert doc["generated_at"] == "2027-01-15T08:00:05.000Z"
    assert (
        counts
        == doc["counts"]
        == {
            "probes": 2,
            "results": 2,
            "state_changes": 1,
            "alerts": 2,
            "incidents": 1,
            "error_issues": 1,
            "error_events": 1,
        }
    )
    # results: since inclusive, until exclusive; times twice
    assert [(r["message"], r["ts"], r["ts_epoch"], r["status_label"]) for r in doc["results"]] == [
        ("r1", "2027-01-15T07:00:00.000Z", SINCE, "critical"),
        ("r2", "2027-01-15T07:58:59.750Z", T - 60.25, "ok"),
    ]
    # probe configs without their secrets
    db = doc["probes"][0]
    assert db["name"] == "db" and "config_json" not in db
    assert db["config"] == {
        "kind": "sql",
        "url": "postgresql://app:••••••@db:5432/app",
        "query": "SELECT 1",
    }
    # alerts active during the range, their labels decoded
    assert [a["title"] for a in doc["alerts"]] == ["firing", "spans since"]
    assert doc["alerts"][0]["labels"] == {"team": "ops"}
    assert doc["alerts"][0]["resolved_at"] is None and doc["alerts"][0]["resolved_at_epoch"] is None
    # the open incident with its whole timeline in time order, and no acknowledge token
    (incident,) = doc["incidents"]
    assert incident["title"] == "db down" and "ack_token" not in incident
    assert [e["kind"] for e in incident["timeline"]] == ["opened", "acknowledged", "resolved"]
    assert incident["timeline"][0]["data"] == {"severity": 1}
    assert incident["timeline"][2]["ts"] == "2027-01-15T08:01:40.000Z"
    assert [i["title"] for i in doc["error_issues"]] == ["KeyError: 'x'"]
    assert doc["error_events"][0]["data"] == {"exception": "ü"}
    assert "secret-ack-token" not in out.read_text(encoding="utf-8")
    assert not list(out.parent.glob("*.tmp"))


def test_export_pages_through_large_tables(
    data: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ex, "PAGE", 2)  # several keyset pages for every section
    out = tmp_path / "all.json"
    counts = ex.export(data, out, since=None, until=T + 1000, now=T, site="s")
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert counts["results"] == 5 and [r["id"] for r in doc["results"]] == [1, 2, 3, 4, 5]
    assert [i["id"] for i in doc["incidents"]] == [1, 2]
    assert [len(i["timeline"]) for i in doc["incidents"]] == [3, 1]
    assert doc["since"] is None and doc["since_epoch"] is None


def test_parse_when_reads_iso_epoch_and_durations_ago() -> None:
    assert ex.parse_when("2027-01-15T08:00:00Z", 0, "since") == T
    assert ex.parse_when("2027-01-15T09:00:00+01:00", 0, "since") == T
    assert ex.parse_when("2027-01-15 08:00", 0, "since") == T  # UTC without an offset
    assert ex.parse_when("1800000000.5", 0, "since") == T + 0.5
    assert ex.parse_when("7d", T, "since") == T - 7 * 86400
    assert ex.parse_when(None, T, "since") is None
    with pytest.raises(ex.ExportError, match="--until: 'yesterday' is not a time"):
        ex.parse_when("yesterday", T, "until")


def test_an_empty_range_is_refused(data: Store, tmp_path: Path) -> None:
    with pytest.raises(ex.ExportError, match="--since must be before --until"):
        ex.export(data, tmp_path / "x.json", since=T, until=T, now=T, site="s")
    assert not (tmp_path / "x.json").exists()
