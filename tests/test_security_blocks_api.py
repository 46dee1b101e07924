"""/api/v1/security: a viewer lists blocks, a responder blocks and unblocks; the answer is the
row after the firewall (a recording fake here) took it; bad input is a 422 changing nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from nachtwacht.clock import FakeClock
from nachtwacht.security import api as security_api
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.helpers import admin_token
from tests.incident_fixtures import site
from tests.test_security_blocks import RESPOND, FakeFirewall, audits, rows


@pytest.fixture
def fw(monkeypatch: pytest.MonkeyPatch) -> FakeFirewall:
    fake = FakeFirewall()
    monkeypatch.setattr(security_api, "FIREWALL", fake)
    return fake


@pytest.fixture
def app(sqlite_store: Store, clock: FakeClock, fw: FakeFirewall) -> Iterator[TestClient]:
    app = create_app(site(sqlite_store, RESPOND), sqlite_store, clock, start_engine=False)
    with TestClient(app) as client:
        yield client


def bearer(store: Store, clock: FakeClock, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token(store, clock.now(), role=role)}"}


def test_block_list_unblock_over_http(
    app: TestClient, sqlite_store: Store, clock: FakeClock, fw: FakeFirewall
) -> None:
    responder = bearer(sqlite_store, clock, "responder")
    viewer = bearer(sqlite_store, clock, "viewer")
    body = {"address": "203.0.113.9", "duration": "2h", "reason": "scanner"}
    refused = app.post("/api/v1/security/blocks", json=body, headers=viewer)
    assert refused.status_code == 403 and rows(sqlite_store) == []
    made = app.post("/api/v1/security/blocks", json=body, headers=responder)
    assert made.status_code == 201, made.text
    view = made.json()
    assert (view["state"], view["address"], view["created_by"]) == (
        "active", "203.0.113.9", "token:test-responder",
    )  # fmt: skip
    assert fw.sets["block"] == {"203.0.113.9": 7200.0}
    listed = app.get("/api/v1/security/blocks", headers=viewer)
    assert listed.status_code == 200 and [b["id"] for b in listed.json()] == [view["id"]]
    assert listed.headers["X-Total-Count"] == "1"
    gone = app.delete(f"/api/v1/security/blocks/{view['id']}", headers=responder)
    assert gone.status_code == 200 and gone.json()["state"] == "removed"
    assert fw.sets["block"] == {}
    assert app.get("/api/v1/security/blocks", headers=viewer).json() == []
    assert len(app.get("/api/v1/security/blocks?all=true", headers=viewer).json()) == 1
    actions = [a for _, a, _ in audits(sqlite_store)]
    assert actions.count("security.block") == 1 and "api.POST" not in actions


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"address": "127.0.0.1"}, "address"),
        ({"address": "0.0.0.0/0", "force": True}, "address"),
        ({"address": "203.0.113.9", "duration": "soon"}, "duration"),
        ({"address": "203.0.113.9", "duration": "30d"}, "duration"),
        ({"address": "x" * 65}, "address"),
        ({"address": "203.0.113.9", "reason": "r" * 10_001}, "reason"),
        ({"address": "203.0.113.9", "incident_id": 77}, "incident"),
        ({"address": "203.0.113.9", "extra": 1}, "extra"),
    ],
)
def test_bad_blocks_are_refused_and_change_nothing(
    app: TestClient, sqlite_store: Store, clock: FakeClock, fw: FakeFirewall, body: dict, field: str
) -> None:
    answer = app.post(
        "/api/v1/security/blocks", json=body, headers=bearer(sqlite_store, clock, "responder")
    )
    assert answer.status_code in (404, 422), answer.text
    assert field in answer.text
    assert rows(sqlite_store) == [] and fw.calls == []


def test_a_refusing_firewall_is_a_502_with_the_row_failed(
    app: TestClient, sqlite_store: Store, clock: FakeClock, fw: FakeFirewall
) -> None:
    fw.refuse = "203.0.113.9"
    answer = app.post(
        "/api/v1/security/blocks",
        json={"address": "203.0.113.9"},
        headers=bearer(sqlite_store, clock, "responder"),
    )
    assert answer.status_code == 502
    assert answer.json()["state"] == "failed" and "File exists" in answer.json()["error"]


def test_lockdown_over_http(
    app: TestClient, sqlite_store: Store, clock: FakeClock, fw: FakeFirewall
) -> None:
    responder = bearer(sqlite_store, clock, "responder")
    on = app.post(
        "/api/v1/security/lockdown",
        json={"ports": [80, 443], "allow": ["10.0.0.0/8"], "duration": "1h"},
        headers=responder,
    )
    assert on.status_code == 201, on.text
    assert {r["state"] for r in on.json()} == {"active"}
    assert fw.sets["port"].keys() == {"80", "443"}
    shown = app.get("/api/v1/security/lockdown", headers=bearer(sqlite_store, clock, "viewer"))
    assert len(shown.json()) == 3
    off = app.delete("/api/v1/security/lockdown", headers=responder)
    assert off.status_code == 200 and {r["state"] for r in off.json()} == {"removed"}
    assert app.delete("/api/v1/security/lockdown", headers=responder).status_code == 404
