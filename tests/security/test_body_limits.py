"""Request bodies: a missing credential is refused before the body, every body has a cap.

The refusals are checked on the ASGI app itself with a `receive` that counts what the app
asks for, so "unread" means the app did not take one chunk of the body. What memory that
saves on a real server under 20 parallel 250 MB bodies is test_body_memory.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from nachtwacht.auth import ingest_keys
from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import ConfigError
from nachtwacht.errors import projects
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from nachtwacht.web.state import AppState, install
from tests.helpers import admin_token, settings_for

SITE = "site: bodies\nprobes: []\n"
NOW = 1_800_000_000.0
TOKEN = "nightly-backup-7f3a"
HEARTBEAT = f"probes:\n  - name: backup\n    kind: heartbeat\n    token: {TOKEN}\n    period: 1d\n"
HUGE = 250 * 1024 * 1024
CHUNK = 64 * 1024
SENT_AT_MOST = 4 * 1024 * 1024  # what the fake client has; an app that reads all gets this
JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded", "accept": "text/html"}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    pulled: int  # body chunks the app asked for

    def json(self) -> Any:
        return orjson.loads(self.body)


async def call(
    app: FastAPI, method: str, path: str, headers: dict[str, str], declared: int | None
) -> Answer:
    """One request straight into the ASGI app; `declared` None: chunked, no Content-Length."""
    pulled = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        more = pulled * CHUNK < SENT_AT_MOST
        return {"type": "http.request", "body": b"0" * CHUNK, "more_body": more}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    path, _, query = path.partition("?")
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    if declared is None:
        raw.append((b"transfer-encoding", b"chunked"))
    else:
        raw.append((b"content-length", str(declared).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": raw,
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    heads = {k.decode(): v.decode() for k, v in start["headers"]}
    return Answer(start["status"], heads, body, pulled)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    # the refusals come before any route, so the store is never opened (nor migrated)
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('bodies') / 'unused.db'}")
    app = create_app(settings_for(SITE, store.url), store, FakeClock(NOW), start_engine=False)
    # called without its lifespan: the state the refusals are counted in, on a stand-in runtime
    install(app, AppState.of(SimpleNamespace(store=store, clock=FakeClock(NOW))))
    return app


NO_CREDENTIALS = [
    ("POST", "/api/v1/incidents", JSON),
    ("PUT", "/api/v1/incidents/1/postmortem", JSON),
    ("POST", "/api/v1/users", JSON),
    ("POST", "/api/v1/alerts", JSON),
    ("POST", "/api/v1/alerts/alertmanager", JSON),
    ("POST", "/api/v1/errors/events", JSON),
    ("POST", "/incidents/1/update", FORM),
]


@pytest.mark.parametrize("declared", [HUGE, None], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("method", "path", "headers"), NO_CREDENTIALS)
async def test_a_request_without_credentials_is_refused_before_its_body_is_read(
    app: FastAPI, method: str, path: str, headers: dict[str, str], declared: int | None
) -> None:
    answer = await call(app, method, path, headers, declared)
    assert answer.pulled == 0
    assert answer.headers["connection"] == "close"
    if "text/html" in headers.get("accept", ""):
        # a browser's form goes to the login page, as the app sends it for any 401
        assert answer.status == 303 and answer.headers["location"].startswith("/login?next=")
        return
    assert answer.status == 401
    detail = answer.json()["detail"]
    assert detail == ("login required" if "alerts" not in path and "errors" not in path else
                      ingest_keys.NO_INGEST_KEY)  # fmt: skip


WITH_CREDENTIALS = [
    ("POST", "/login", JSON, 64 * 1024),
    ("POST", "/logout", JSON, 64 * 1024),
    ("POST", "/ack/not-a-token", FORM, 64 * 1024),
    ("POST", "/api/v1/incidents", JSON | {"authorization": "Bearer nwt_x"}, 64 * 1024),
    ("POST", "/incidents/1/update", FORM | {"cookie": "nw_session=x"}, 64 * 1024),
    ("POST", "/api/v1/alerts?key=nwk_x", JSON, 64 * 1024),
    ("PUT", "/api/v1/incidents/1/postmortem", JSON | {"cookie": "nw_session=x"}, 256 * 1024),
    ("POST", "/api/v1/alerts/alertmanager", JSON | {"authorization": "Bearer k"}, 1 << 20),
    ("POST", "/api/v1/errors/events", JSON | {"authorization": "Bearer k"}, 1 << 20),
]


@pytest.mark.parametrize(("method", "path", "headers", "cap"), WITH_CREDENTIALS)
async def test_a_body_declared_larger_than_its_cap_is_refused_unread(
    app: FastAPI, method: str, path: str, headers: dict[str, str], cap: int
) -> None:
    answer = await call(app, method, path, headers, cap + 1)
    assert answer.status == 413 and answer.pulled == 0
    assert answer.json() == {"detail": f"the body is larger than {cap} bytes", "field": None}
    # the rest stays unread: the server drops the connection instead of reading on
    assert answer.headers["connection"] == "close"
    # the outer middlewares still apply
    assert answer.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(("method", "path", "headers", "cap"), WITH_CREDENTIALS)
async def test_a_chunked_body_is_cut_off_as_soon_as_it_passes_its_cap(
    app: FastAPI, method: str, path: str, headers: dict[str, str], cap: int
) -> None:
    answer = await call(app, method, path, headers, None)
    assert answer.status == 413
    assert answer.pulled == cap // CHUNK + 1  # the chunk that passed the cap, and no more


@pytest.fixture
def client(sqlite_store: Store, clock: FakeClock) -> Iterator[TestClient]:
    app = create_app(
        settings_for(SITE.replace("probes: []\n", HEARTBEAT), sqlite_store.url),
        sqlite_store,
        clock,
        start_engine=False,
    )
    with TestClient(app) as c:
        yield c


def test_only_the_routes_that_need_more_than_64_kb_take_it(
    client: TestClient, sqlite_store: Store, clock: FakeClock
) -> None:
    token = {"Authorization": f"Bearer {admin_token(sqlite_store, clock.now())}"}
    with sqlite_store.begin() as conn:
        key = ingest_keys.create_ingest_key(conn, "am", "all", clock.now(), actor="t")["key"]
        project = projects.add_project(conn, "shop", clock.now(), actor="t", base="http://x")

    # a form or JSON to any other route: 64 KiB
    big = {"title": "a big body", "severity": 3, "impact": "x" * 70_000}
    refused = client.post("/api/v1/incidents", json=big, headers=token)
    assert refused.status_code == 413 and refused.json()["field"] is None
    declared = client.post(
        "/api/v1/incidents", json={"title": "a normal one", "severity": 3}, headers=token
    )
    assert declared.status_code == 201
    incident = declared.json()["id"]

    # a whole review: four sections of 20,000 characters, two bytes each in UTF-8
    review = {f: "é" * 20_000 for f in ("root_cause", "contributing_factors", "impact", "lessons")}
    put = client.put(f"/api/v1/incidents/{incident}/postmortem", json=review, headers=token)
    assert put.status_code == 200, put.text

    # an Alertmanager group of 50 alerts with long descriptions (about 300 kB); resolved,
    # which costs the store least: the size is what is tested here
    alerts = [
        {
            "status": "resolved",
            "labels": {"alertname": "DiskFull", "instance": f"host{i}:9100", "job": "node"},
            "annotations": {"summary": f"disk full on host{i}", "description": "d" * 6000},
            "fingerprint": f"{i:016x}",
        }
        for i in range(50)
    ]
    webhook = {"version": "4", "status": "firing", "alerts": alerts}
    ok = client.post(
        "/api/v1/alerts/alertmanager", json=webhook, headers={"Authorization": f"Bearer {key}"}
    )
    assert ok.status_code == 200, ok.text
    too_big = client.post(
        "/api/v1/alerts/alertmanager",
        json={**webhook, "alerts": alerts * 4},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert too_big.status_code == 413

    # routes that cap their own bodies: a heartbeat keeps 10 kB of a job's output whatever
    # its size, and Sentry's envelope endpoint takes errors.max_envelope_bytes (20 MiB)
    assert client.post(f"/ping/{TOKEN}", content=b"log line\n" * 20_000).status_code == 200
    event = {"message": "big", "level": "error", "extra": {"blob": "b" * 200_000}}
    payload = orjson.dumps(event)
    envelope = b"{}\n" + orjson.dumps({"type": "event", "length": len(payload)}) + b"\n" + payload
    sentry = {"X-Sentry-Auth": f"Sentry sentry_key={project['public_key']}, sentry_version=7"}
    answer = client.post(f"/api/{project['id']}/envelope/", content=envelope, headers=sentry)
    assert answer.status_code == 200, answer.text


def test_the_caps_and_the_depth_are_settings(sqlite_store: Store, clock: FakeClock) -> None:
    settings = settings_for(
        SITE + "server:\n  max_body_bytes: 8192\n  max_json_depth: 8\n", sqlite_store.url
    )
    with TestClient(create_app(settings, sqlite_store, clock, start_engine=False)) as client:
        login = {"username": "admin", "password": "p" * 9000}
        answer = client.post("/login", json=login)
        assert answer.status_code == 413
        assert answer.json()["detail"] == "the body is larger than 8192 bytes"
        deep = client.post("/login", content=b'{"username": ' + b"[" * 9 + b"]" * 9 + b"}")
        assert deep.status_code == 422 and "deeper than 8 levels" in deep.json()["detail"]
    with pytest.raises(ConfigError, match="max_body_bytes"):
        settings_for(SITE + "server:\n  max_body_bytes: 10\n", sqlite_store.url)
