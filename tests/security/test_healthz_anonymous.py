"""Anonymous /healthz says ok, degraded or down and nothing else; the details need a viewer.

The details name the spool's directory, the store's raw errors, engine modules and their
exceptions, and the version: a map for an attacker, and none of a load balancer's business.
Real app, real store; the failures are real (a module that raises, a store that cannot open,
a spool whose disk is full).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nachtwacht import __version__
from nachtwacht.clock import FakeClock
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.auth_helpers import add_user, fast_hashing, login  # noqa: F401 - a fixture
from tests.helpers import admin_token, settings_for
from tests.test_nothing_lost import SITE, TOKEN, outage
from tests.test_spool_disk_full import FullDisk

SECRET_ERROR = "RuntimeError: cannot open /srv/secret-path/module.conf"


@pytest.fixture
def served(sqlite_store: Store, clock: FakeClock) -> Iterator[tuple[TestClient, Any]]:
    app = create_app(settings_for(SITE, sqlite_store.url), sqlite_store, clock, start_engine=False)
    with TestClient(app) as client:
        yield client, app.state.nw.runtime


def fail_a_module(runtime: Any) -> None:
    async def broken(now: float) -> None:
        raise RuntimeError("cannot open /srv/secret-path/module.conf")

    runtime.engine.add("broken", 10, broken)
    assert asyncio.run(runtime.engine.tick_once("broken")) is False


def viewer(store: Store, clock: FakeClock) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token(store, clock.now(), role='viewer')}"}


def test_anonymous_healthz_is_only_the_verdict_without_paths_errors_or_version(
    served: tuple[TestClient, Any],
) -> None:
    client, runtime = served
    fail_a_module(runtime)
    answer = client.get("/healthz")
    assert answer.status_code == 503
    assert answer.json() == {"status": "degraded"}
    text = answer.text
    for leak in (str(runtime.spool.directory), "secret-path", "RuntimeError", __version__):
        assert leak not in text


@pytest.mark.usefixtures("fast_hashing")
def test_the_details_need_a_viewer_by_token_or_session(
    served: tuple[TestClient, Any], sqlite_store: Store, clock: FakeClock
) -> None:
    client, runtime = served
    fail_a_module(runtime)
    body = client.get("/healthz", headers=viewer(sqlite_store, clock)).json()
    assert body["status"] == "degraded" and body["version"] == __version__
    assert {m["module"]: m["last_error"] for m in body["modules"]}["broken"] == SECRET_ERROR
    assert body["spool"]["dir"] == str(runtime.spool.directory)
    # asking for the details without credentials is refused rather than quietly cut short
    refused = client.get("/healthz", params={"details": "1"})
    assert refused.status_code == 401 and "status" not in refused.json()
    # a logged-in browser (a viewer's session cookie) sees them too
    add_user(sqlite_store, clock, "vera", "viewer")
    login(client, "vera")
    assert "modules" in client.get("/healthz", params={"details": "1"}).json()


def test_down_when_neither_store_nor_spool_keeps_anything_and_details_survive_the_outage(
    served: tuple[TestClient, Any],
    sqlite_store: Store,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, runtime = served
    known = viewer(sqlite_store, clock)
    assert client.get("/healthz", headers=known).json()["store"]["available"] is True
    never_used = viewer(sqlite_store, clock)  # made, but never shown to this server
    disk = FullDisk(monkeypatch)
    with outage(runtime, tmp_path):
        disk.fill()
        assert client.post(f"/ping/{TOKEN}", content=b"lost").status_code == 503
        anonymous = client.get("/healthz")
        details = client.get("/healthz", headers=known)
        unverifiable = client.get("/healthz", headers=never_used)
    assert (anonymous.status_code, anonymous.json()) == (503, {"status": "down"})
    # a token verified before the store went down still reads the details (read-only, for a
    # bounded time); one the server cannot check now gets the verdict only
    body = details.json()
    assert details.status_code == 503 and body["status"] == "down"
    assert body["store"]["available"] is False and body["spool"]["writable"] is False
    assert (unverifiable.status_code, unverifiable.json()) == (503, {"status": "down"})
    assert json.dumps(unverifiable.json()) == '{"status": "down"}'
