"""/api/v1/backups and /api/v1/store/check over real HTTP (TestClient) on every backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nachtwacht.backup.manifest import table_file
from nachtwacht.clock import FakeClock
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.helpers import admin_token, settings_for


@pytest.fixture
def app_parts(store: Store, clock: FakeClock, tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    settings = settings_for(f"backup:\n  dir: {tmp_path / 'backups'}\nprobes: []\n", store.url)
    app = create_app(settings, store, clock, start_engine=False)
    admin = admin_token(store, clock.now())
    viewer = admin_token(store, clock.now(), role="viewer")
    with TestClient(app, headers={"Authorization": f"Bearer {admin}"}) as client:
        yield client, viewer


def test_create_list_and_verify_backups(
    app_parts: tuple[TestClient, str], tmp_path: Path, store: Store
) -> None:
    client, _viewer = app_parts
    assert client.get("/api/v1/backups").json() == []
    created = client.post("/api/v1/backups")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "nachtwacht-20270115T080000Z"
    assert body["created_at"] == "2027-01-15T08:00:00Z"
    assert body["kind"] == ("sqlite" if store.dialect == "sqlite" else "logical")
    assert body["rows"] >= 2  # the two API tokens at least
    listed = client.get("/api/v1/backups").json()
    assert [b["name"] for b in listed] == [body["name"]]

    verified = client.post(f"/api/v1/backups/{body['name']}/verify")
    assert verified.status_code == 200
    assert verified.json()["ok"] is True and verified.json()["problems"] == []

    data = Path(body["path"]) / (
        "nachtwacht.db" if body["kind"] == "sqlite" else table_file("api_tokens")
    )
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    broken = client.post(f"/api/v1/backups/{body['name']}/verify").json()
    assert broken["ok"] is False
    assert "SHA-256 does not match" in broken["problems"][0]


def test_unknown_and_malformed_names(app_parts: tuple[TestClient, str]) -> None:
    client, _viewer = app_parts
    missing = client.post("/api/v1/backups/nachtwacht-20990101T000000Z/verify")
    assert missing.status_code == 404
    assert missing.json()["field"] == "name"
    assert "no backup 'nachtwacht-20990101T000000Z'" in missing.json()["detail"]
    bad = client.post("/api/v1/backups/..%2F..%2Fetc/verify")
    assert bad.status_code in (404, 422)
    weird = client.post("/api/v1/backups/not-a-backup/verify")
    assert weird.status_code == 422 and weird.json()["field"] == "name"


def test_only_an_admin_makes_a_backup(app_parts: tuple[TestClient, str]) -> None:
    client, viewer = app_parts
    headers = {"Authorization": f"Bearer {viewer}"}
    refused = client.post("/api/v1/backups", headers=headers)
    assert refused.status_code == 403
    assert client.get("/api/v1/backups", headers=headers).status_code == 200
    assert client.get("/api/v1/backups").json() == []


def test_store_check(app_parts: tuple[TestClient, str], store: Store) -> None:
    client, viewer = app_parts
    report = client.get("/api/v1/store/check", headers={"Authorization": f"Bearer {viewer}"})
    assert report.status_code == 200
    body = report.json()
    assert body["ok"] is True, body
    assert body["backend"] == ("mariadb" if store.dialect == "mysql" else store.dialect)
    assert body["row_counts"]["api_tokens"] == 2
    assert {c["name"] for c in body["checks"]} >= {"schema version", "catalog", "row counts"}
