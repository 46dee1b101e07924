"""The agent endpoints over HTTP: a token scoped to one location, its probes with an ETag, its
results stored once, limits on the batch; the probe page and API show each location."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from nachtwacht.agents import service
from nachtwacht.clock import FakeClock
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.conftest import closed_port
from tests.helpers import admin_token, settings_for


def config(port: int) -> str:
    return f"""
site: agents
server: {{location: hq}}
probes:
  - {{name: shop, kind: tcp, host: 127.0.0.1, port: {port}, interval: 30s, retries: 0,
     locations: [hq, ams, fra], down_when: "2 of 3"}}
  - {{name: fra-only, kind: tcp, host: 127.0.0.1, port: {port}, locations: [fra]}}
  - {{name: plain, kind: tcp, host: 127.0.0.1, port: {port}}}
"""


@pytest.fixture
def client(sqlite_store: Store, clock: FakeClock) -> Iterator[TestClient]:
    settings = settings_for(config(closed_port()), sqlite_store.url)
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    with TestClient(app) as c:
        yield c


def agent_token(store: Store, location: str, now: float) -> dict[str, str]:
    with store.begin() as conn:
        row = service.create_agent_token(conn, f"{location}-agent", location, now, actor="test")
    return {"Authorization": f"Bearer {row['token']}"}


def test_an_agent_token_fetches_its_probes_and_nothing_else(
    client: TestClient, sqlite_store: Store, clock: FakeClock
) -> None:
    ams = agent_token(sqlite_store, "ams", clock.now())
    got = client.get("/api/v1/agent/probes", headers=ams)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["location"] == "ams" and body["last_seq"] == 0
    assert [p["config"]["name"] for p in body["probes"]] == ["shop"]
    etag = got.headers["etag"]
    assert (
        client.get("/api/v1/agent/probes", headers={**ams, "If-None-Match": etag}).status_code
        == 304
    )
    # everywhere else: refused
    for path in ("/api/v1/probes", "/api/v1/status", "/api/v1/agents", "/probes/shop"):
        assert client.get(path, headers=ams).status_code == 403, path
    assert client.get("/api/v1/agent/probes").status_code == 401
    # a token for the server's own location would mix an agent's results with the server's
    hq = agent_token(sqlite_store, "hq", clock.now())
    assert client.get("/api/v1/agent/probes", headers=hq).status_code == 403
    bad = {"Authorization": "Bearer nwa_not-a-token"}
    assert client.get("/api/v1/agent/probes", headers=bad).status_code == 401
    # an API token is the wrong kind of credential here, whoever holds it
    api = {"Authorization": f"Bearer {admin_token(sqlite_store, clock.now())}"}
    assert client.get("/api/v1/agent/probes", headers=api).status_code == 403


def test_results_are_validated_stored_once_and_shown_per_location(
    client: TestClient, sqlite_store: Store, clock: FakeClock
) -> None:
    ams = agent_token(sqlite_store, "ams", clock.now())
    fra = agent_token(sqlite_store, "fra", clock.now())
    shop = client.get("/api/v1/agent/probes", headers=ams).json()["probes"][0]["id"]
    now = clock.now()

    def result(seq: int, status: int, **extra: object) -> dict:
        return {"seq": seq, "probe_id": shop, "ts": now, "status": status,
                "message": "refused", **extra}  # fmt: skip

    url = "/api/v1/agent/results"
    admin = {"Authorization": f"Bearer {admin_token(sqlite_store, clock.now())}"}
    sent = client.post(url, headers=ams, json={"results": [result(1, 2), result(2, 2)]})
    assert sent.status_code == 200, sent.text
    assert sent.json()["stored"] == 2 and sent.json()["last_seq"] == 2
    # one location of three failing: degraded, on the probe and the overview
    assert client.get("/api/v1/probes/shop", headers=admin).json()["state"] == "degraded"
    overview = client.get("/", headers=admin)
    assert overview.status_code == 200 and 'data-state="degraded"' in overview.text
    again = client.post(url, headers=ams, json={"results": [result(2, 2)]})
    assert again.json() == {"stored": 0, "duplicates": 1, "refused": 0, "last_seq": 2}
    for bad in (
        {"results": [result(3, 7)]},
        {"results": [result(3, 2, message="x" * 501)]},
        {"results": [result(3, 2, ts=now + 3600)]},
        {"results": [result(4, 2), result(3, 2)]},
    ):
        assert client.post(url, headers=ams, json=bad).status_code == 422
    # more than a batch may hold, and a body over the limit: refused whole
    many = {
        "results": [{"seq": 3 + i, "probe_id": shop, "ts": now, "status": 0} for i in range(1001)]
    }
    assert client.post(url, headers=ams, json=many).status_code in (413, 422)
    assert (
        client.post(
            url, headers=ams, json={"results": [result(3, 2, message="x" * 500)] * 130}
        ).status_code
        == 413
    )
    assert client.get("/api/v1/agents", headers=admin).json()[0]["last_seq"] == 2
    assert client.post(url, headers=fra, json={"results": [result(1, 2)]}).json()["stored"] == 1
    probe = client.get("/api/v1/probes/shop", headers=admin).json()
    assert probe["state"] == "critical" and probe["down_when"] == "2 of 3"
    assert {x["location"]: x["state"] for x in probe["locations"]} == {
        "hq": "new", "ams": "critical", "fra": "critical",
    }  # fmt: skip
    page = client.get("/probes/shop", headers=admin)
    assert page.status_code == 200 and 'id="probe-locations"' in page.text
    assert 'data-location="ams"' in page.text
    agents = client.get("/api/v1/agents", headers=admin).json()
    assert [(a["location"], a["last_seq"], a["silent"]) for a in agents] == [
        ("ams", 2, False), ("fra", 1, False),
    ]  # fmt: skip
    status = client.get("/api/v1/status", headers=admin).json()
    assert [a["location"] for a in status["agents"]] == ["ams", "fra"]


def test_status_lists_the_agents_and_marks_a_silent_one(capsys: pytest.CaptureFixture) -> None:
    from datetime import UTC

    from nachtwacht.probes import cli

    agents = [
        {"location": "office", "seconds_since_contact": 150.0, "silent": True},
        {"location": "ams", "seconds_since_contact": 2.0, "silent": False},
    ]
    data = {"site": "s", "overall": "degraded", "generated_at": "2026-12-08T02:00:00+00:00",
            "components": [], "engine": [], "agents": agents}  # fmt: skip
    cli._print_status(data, UTC, 80)
    out = capsys.readouterr().out
    assert "SILENT office           last contact 2m ago" in out
    assert "ok     ams              last contact 2s ago" in out
