"""Every route but the public ones refuses anonymous requests; cookie forms need CSRF."""

from __future__ import annotations

import re

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from nachtwacht.clock import FakeClock
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.helpers import settings_for

# the whole public surface: health, login, heartbeat pings, acknowledge links (secret tokens),
# and ingestion (which demands its own key, checked below)
PUBLIC = {"/healthz", "/login", "/logout"}
PUBLIC_PREFIXES = ("/ping/", "/ack/", "/verify/", "/static")
INGEST = {"/api/v1/alerts", "/api/v1/alerts/alertmanager"}


def _routes(routes: list, prefix: str = "") -> list[tuple[str, set[str]]]:
    """Every API route with its full path (FastAPI keeps included routers as wrappers)."""
    out: list[tuple[str, set[str]]] = []
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:
            out += _routes(original.routes, prefix + route.include_context.prefix)
        elif isinstance(route, APIRoute):
            out.append((prefix + route.path, set(route.methods)))
    return out


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_every_non_public_route_refuses_anonymous_access(
    sqlite_store: Store, clock: FakeClock
) -> None:
    settings = settings_for("probes: []\n", sqlite_store.url)
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    checked = 0
    with TestClient(app, follow_redirects=False) as client:
        for path, methods in _routes(app.routes):
            if path in PUBLIC or path.startswith(PUBLIC_PREFIXES):
                continue
            for method in methods:
                if method == "HEAD":
                    continue
                url = _fill(path)
                if path in INGEST and method == "POST":
                    response = client.post(url, json={"title": "x"})
                    assert response.status_code == 401, (method, path, response.text)
                    continue
                response = client.request(method, url, json={})
                if response.status_code in (302, 303, 307):
                    assert "/login" in response.headers["location"], (method, path)
                else:
                    assert response.status_code == 401, (method, path, response.text)
                checked += 1
    assert checked > 40  # the API and the pages, not an empty app


def test_a_cookie_session_post_without_csrf_is_refused(
    sqlite_store: Store, clock: FakeClock
) -> None:
    from nachtwacht.auth import users

    settings = settings_for("probes: []\n", sqlite_store.url)
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    with sqlite_store.begin() as conn:
        users.add_user(conn, "rita", "correct horse battery", "responder", clock.now(), actor="t")
    with TestClient(app) as client:
        login = client.post(
            "/login", json={"username": "rita", "password": "correct horse battery"}
        )
        assert login.status_code == 200, login.text
        csrf = login.json()["csrf_token"]
        body = {"title": "Disk full on db1", "severity": 2}
        refused = client.post("/api/v1/incidents", json=body)
        assert refused.status_code == 403
        accepted = client.post("/api/v1/incidents", json=body, headers={"X-CSRF-Token": csrf})
        assert accepted.status_code == 201, accepted.text
