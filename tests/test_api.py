"""The HTTP surface: /api/v1, /healthz and /metrics, against a real store and real targets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from nachtwacht.clock import FakeClock
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.conftest import closed_port
from tests.helpers import admin_token, settings_for


@pytest.fixture
def tcp_port() -> Iterator[int]:
    """A real listening socket: the kernel completes the handshake for the probe."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        yield sock.getsockname()[1]


@pytest.fixture
def client(store: Store, clock: FakeClock, tcp_port: int) -> Iterator[TestClient]:
    settings = settings_for(
        f"""
site: test-site
probes:
  - name: up
    kind: tcp
    host: 127.0.0.1
    port: {tcp_port}
    component: web
  - name: down
    kind: tcp
    host: 127.0.0.1
    port: {closed_port()}
    retries: 0
    component: database
    severity: 1
""",
        store.url,
    )
    app = create_app(settings, store, clock, start_engine=False)
    token = admin_token(store, clock.now())
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def test_the_api_refuses_anonymous_requests(store: Store, clock: FakeClock) -> None:
    settings = settings_for("probes: []\n", store.url)
    with TestClient(create_app(settings, store, clock, start_engine=False)) as anonymous:
        for path in ("/api/v1/status", "/api/v1/probes", "/metrics", "/api/v1/incidents"):
            response = anonymous.get(path)
            assert response.status_code == 401, path
            assert response.json() == {"detail": "login required", "field": None}
        assert anonymous.post("/api/v1/incidents", json={}).status_code == 401
        assert anonymous.get("/healthz").status_code in (200, 503)  # public


def test_check_now_then_status_reports_components(client: TestClient) -> None:
    assert client.post("/api/v1/probes/up/check").json()["state"] == "ok"
    down = client.post("/api/v1/probes/down/check").json()
    assert down["state"] == "critical" and "Connection refused" in down["message"]
    client.app.state.nw.runtime.writer.flush_sync()
    status = client.get("/api/v1/status").json()
    assert status["overall"] == "critical" and status["level"] == 2
    comps = {c["name"]: c["state"] for c in status["components"]}
    assert comps == {"web": "ok", "database": "critical"}


def test_probe_detail_results_and_history(client: TestClient) -> None:
    client.post("/api/v1/probes/down/check")
    client.app.state.nw.runtime.writer.flush_sync()
    probe = client.get("/api/v1/probes/down").json()
    assert probe["state"] == "critical" and probe["severity"] == 1
    results = client.get("/api/v1/probes/down/results").json()
    assert len(results) == 1 and results[0]["status"] == 2
    history = client.get("/api/v1/probes/down/history").json()
    assert [h["to_state"] for h in history] == ["critical"]


def test_unknown_probe_is_a_json_404_naming_the_field(client: TestClient) -> None:
    response = client.get("/api/v1/probes/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "no probe named 'nope'", "field": "name"}


def test_bad_query_parameter_is_a_json_422_naming_the_field(client: TestClient) -> None:
    response = client.get("/api/v1/probes/up/rollups", params={"resolution": "week"})
    assert response.status_code == 422
    assert response.json()["field"] == "resolution"


def test_metrics_expose_each_probe_status_and_latency(client: TestClient) -> None:
    client.post("/api/v1/probes/up/check")
    client.post("/api/v1/probes/down/check")
    text = client.get("/metrics").text
    assert 'nachtwacht_probe_status{component="web",kind="tcp",probe="up"} 0.0' in text
    assert 'nachtwacht_probe_status{component="database",kind="tcp",probe="down"} 2.0' in text
    assert 'nachtwacht_probe_up{component="database",kind="tcp",probe="down"} 0.0' in text
    assert 'nachtwacht_probe_latency_seconds{component="web",kind="tcp",probe="up"}' in text


def test_healthz_turns_503_when_an_engine_module_fails(client: TestClient) -> None:
    engine = client.app.state.nw.runtime.engine

    async def fine(now: float) -> None:
        return None

    async def broken(now: float) -> None:
        raise RuntimeError("analytics exploded")

    engine.add("fine", 10, fine)
    engine.add("broken", 10, broken)
    asyncio.run(engine.tick_once("fine"))
    assert asyncio.run(engine.tick_once("broken")) is False
    response = client.get("/healthz")
    assert response.status_code == 503
    modules = {m["module"]: m for m in response.json()["modules"]}
    assert modules["fine"]["healthy"] is True
    assert modules["broken"]["healthy"] is False
    assert modules["broken"]["last_error"] == "RuntimeError: analytics exploded"


def test_a_body_that_is_not_json_names_the_body(client: TestClient) -> None:
    response = client.post(
        "/api/v1/incidents",
        content=b'{"title": "broken',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["field"] == "body"
