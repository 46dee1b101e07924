"""The actor recorded is the authenticated principal, never a name in the request body (issue 12:
a responder token acknowledged "as alice"). The body fields are still accepted, and ignored.

Real app (create_app), real SQLite store; every API route that used to take an actor, a
created_by or similar from the body.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nachtwacht.clock import FakeClock
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.auth_helpers import add_user, fast_hashing, login  # noqa: F401 - fixture
from tests.helpers import admin_token, settings_for

pytestmark = pytest.mark.usefixtures("fast_hashing")
SITE = """
site: actors
timezone: Europe/Amsterdam
people:
  contacts:
    - {id: olga, name: Olga Oncall, roles: [oncall_engineer], email: olga@example.org}
    - {id: bert, name: Bert Backup, roles: [devops], email: bert@example.org}
  rotations:
    - {name: primary, type: weekly, handoff: "mon 09:00", start: 2026-01-01, members: [olga]}
probes: []
"""
FORGED = "alice"  # the name a request body claims to act as
SYSTEM = {"", "nachtwacht"}  # no actor, and the server's own events (notifications sent)


@pytest.fixture
def client(sqlite_store: Store, clock: FakeClock) -> Iterator[TestClient]:
    add_user(sqlite_store, clock, "rita", "responder")
    app = create_app(settings_for(SITE, sqlite_store.url), sqlite_store, clock, start_engine=False)
    with TestClient(app) as c:
        yield c


def _incident(client: TestClient, headers: dict[str, str]) -> int:
    made = client.post(
        "/api/v1/incidents", json={"title": "Checkout is slow", "severity": 3}, headers=headers
    )
    assert made.status_code == 201, made.text
    return made.json()["id"]


def _actors(client: TestClient, headers: dict[str, str], incident_id: int) -> set[str]:
    detail = client.get(f"/api/v1/incidents/{incident_id}", headers=headers).json()
    return {e["actor"] for e in detail["timeline"] if e.get("actor")} | {
        detail.get("acknowledged_by") or ""
    }


# (route, body, how to read who was recorded): each body names FORGED as its actor
Reader = Callable[[TestClient, dict[str, str], Any], set[str]]


def _incident_route(path: str, body: dict[str, Any]) -> tuple[str, dict[str, Any], Reader]:
    def read(client: TestClient, headers: dict[str, str], answer: Any) -> set[str]:
        return _actors(client, headers, answer["id"])

    return path, body, read


def _created_by(client: TestClient, headers: dict[str, str], answer: Any) -> set[str]:
    return {answer["created_by"]}


ROUTES = {
    "declare": _incident_route(
        "/api/v1/incidents", {"title": "Search is down", "severity": 3, "actor": FORGED}
    ),
    "ack": _incident_route("/api/v1/incidents/{id}/ack", {"actor": FORGED}),
    "update": _incident_route(
        "/api/v1/incidents/{id}/updates", {"message": "looking", "actor": FORGED}
    ),
    "severity": _incident_route(
        "/api/v1/incidents/{id}/severity", {"severity": 2, "reason": "worse", "actor": FORGED}
    ),
    "assign": _incident_route(
        "/api/v1/incidents/{id}/assign", {"contact": "bert", "actor": FORGED}
    ),
    "escalate": _incident_route(
        "/api/v1/incidents/{id}/escalate", {"reason": "need the DBA", "actor": FORGED}
    ),
    "note": _incident_route("/api/v1/incidents/{id}/notes", {"text": "hm", "actor": FORGED}),
    "resolve": _incident_route(
        "/api/v1/incidents/{id}/resolve", {"message": "fixed", "actor": FORGED}
    ),
    "maintenance": (
        "/api/v1/maintenance",
        {"name": "kernel", "duration": "1h", "created_by": FORGED},
        _created_by,
    ),
    "silence": (
        "/api/v1/silences",
        {"all": True, "duration": "1h", "created_by": FORGED},
        _created_by,
    ),
    "override": (
        "/api/v1/oncall/overrides",
        {"rotation": "primary", "contact": "bert", "ends_at": "2090-01-01 09:00", "actor": FORGED},
        _created_by,
    ),
}


@pytest.mark.parametrize("route", ROUTES)
def test_a_token_acting_as_someone_else_is_recorded_as_itself(
    client: TestClient, sqlite_store: Store, clock: FakeClock, route: str
) -> None:
    secret = admin_token(sqlite_store, clock.now(), role="responder")
    headers = {"Authorization": f"Bearer {secret}"}
    path, body, read = ROUTES[route]
    answer = client.post(path.format(id=_incident(client, headers)), json=body, headers=headers)
    assert answer.status_code in (200, 201), answer.text
    recorded = read(client, headers, answer.json()) - SYSTEM
    assert recorded == {"token:test-responder"}, recorded


@pytest.mark.parametrize("route", ["ack", "resolve", "silence"])
def test_a_session_acting_as_someone_else_is_recorded_as_its_user(
    client: TestClient, route: str
) -> None:
    headers = {"X-CSRF-Token": login(client, "rita")}
    path, body, read = ROUTES[route]
    answer = client.post(path.format(id=_incident(client, headers)), json=body, headers=headers)
    assert answer.status_code in (200, 201), answer.text
    assert read(client, headers, answer.json()) - SYSTEM == {"rita"}
