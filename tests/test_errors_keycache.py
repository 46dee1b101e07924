"""The ingestion endpoints' key cache: a project added by the CLI, which does not tell the
server, is accepted from its first events; unknown keys share paced reloads instead of each
querying the store; a key that cannot be checked is not refused with a 401 (an SDK drops it).

Real uvicorn on every backend for the CLI case; the cache alone, on a FakeClock, for the rest.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from nachtwacht.clock import FakeClock
from nachtwacht.errors.projects import KeyCache
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store, StoreError
from nachtwacht.web.app import create_app
from tests.conftest import free_port
from tests.helpers import settings_for
from tests.test_errors_fixtures import Server, add_project, envelope, msg_event, server

PARALLEL = 50
ENVELOPE = {"Content-Type": "application/x-sentry-envelope"}


@dataclass
class Running:
    base: str
    app: Any
    store: Store
    config: Path
    project: dict[str, Any]

    @property
    def cache(self) -> KeyCache:
        return self.app.state.error_keys[1]


@pytest.fixture
def running(store: Store, tmp_path: Path, clock: FakeClock) -> Iterator[Running]:
    """uvicorn serving the app in a thread (engine not started: the test drains the spool)."""
    spool = f"spool:\n  dir: {tmp_path / 'spool'}\n"
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(f"store:\n  url: {store.url}\n{spool}")
    project = add_project(store)
    app = create_app(settings_for(spool, store.url), store, clock, start_engine=False)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield Running(f"http://127.0.0.1:{port}", app, store, config, project)
    finally:
        srv.should_exit = True
        thread.join(20)


def _send(base: str, project_id: int, key: str) -> int:
    auth = {"X-Sentry-Auth": f"Sentry sentry_key={key}, sentry_version=7"}
    r = httpx.post(
        f"{base}/api/{project_id}/envelope/",
        content=envelope(msg_event(f"first error {uuid.uuid4().hex}")),
        headers=ENVELOPE | auth,
        timeout=30,
    )
    return r.status_code


def _burst(base: str, project_id: int, keys: list[str]) -> list[int]:
    with ThreadPoolExecutor(len(keys)) as pool:
        return list(pool.map(lambda k: _send(base, project_id, k), keys))


def _slowly(load: Callable[[], Any]) -> Callable[[], Any]:
    def slow() -> Any:
        time.sleep(0.3)
        return load()

    return slow


def _events_of(store: Store, project_id: int) -> int:
    e = t.error_events.c
    with store.connect() as conn:
        query = select(func.count()).where(e.project_id == project_id)
        return int(conn.execute(query).scalar_one())


def test_a_project_added_by_the_cli_takes_its_first_parallel_events(running: Running) -> None:
    # the cache is warm from another project
    assert _send(running.base, running.project["id"], running.project["public_key"]) == 200
    # the CLI, in its own process, adds a project; the server is not told
    made = subprocess.run(
        [sys.executable, "-m", "nachtwacht", "project", "add", "fresh", "--json"]
        + ["-c", str(running.config)],
        capture_output=True, text=True, timeout=60, env=os.environ.copy(),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    fresh = httpx.Response(200, content=made.stdout).json()
    assert fresh["public_key"] not in running.cache.keys
    # a store across a network answers in milliseconds, a local SQLite file in microseconds:
    # slow the loads down so the burst arrives while one runs, whatever the backend
    running.cache.load = _slowly(running.cache.load)
    # the SDK's first events, in parallel: none may be refused (an SDK does not retry a 401)
    statuses = _burst(running.base, fresh["id"], [fresh["public_key"]] * PARALLEL)
    assert statuses == [200] * PARALLEL
    running.app.state.nw.runtime.drainer.drain_all()
    assert _events_of(running.store, fresh["id"]) == PARALLEL


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_a_burst_of_unknown_keys_shares_paced_reloads(running: Running, clock: FakeClock) -> None:
    assert _send(running.base, running.project["id"], running.project["public_key"]) == 200
    cache, before, started = running.cache, running.cache.begun, clock.now()
    junk = [uuid.uuid4().hex for _ in range(PARALLEL)]
    assert _burst(running.base, running.project["id"], junk) == [401] * PARALLEL
    reloads = cache.begun - before
    # requests arrive over real time, the fake clock moves only by the cache's pauses: what
    # holds is the pace (one reload per miss_interval of the clock), well short of one each
    assert 1 <= reloads <= 1 + (clock.now() - started) / cache.miss_interval
    assert reloads < PARALLEL / 2


# -- the cache alone ---------------------------------------------------------------------------


class Keys:
    """The store's projects as the cache's loader sees them; counts loads, can fail."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, int, str, bool]] = {}
        self.loads = 0
        self.down = False

    def add(self, name: str) -> str:
        key = uuid.uuid4().hex
        self.rows[key] = (key, len(self.rows) + 1, name, False)
        return key

    def __call__(self) -> list[tuple[str, int, str, bool]]:
        self.loads += 1
        if self.down:
            raise StoreError("store sqlite:///x: unable to open database file")
        return list(self.rows.values())


async def _lookups(cache: KeyCache, keys: list[str]) -> list[Any]:
    """All at once, as concurrent requests would."""
    return await asyncio.gather(*(cache.by_key(k) for k in keys), return_exceptions=True)


async def test_concurrent_misses_share_one_reload_and_find_a_new_key(clock: FakeClock) -> None:
    keys = Keys()
    old = keys.add("shop")
    cache = KeyCache(keys, clock)
    assert (await _lookups(cache, [old]))[0].name == "shop" and keys.loads == 1
    new = keys.add("fresh")  # by another process, just after the load
    found = await _lookups(cache, [new] * 200)
    assert {e.name for e in found} == {"fresh"}
    assert keys.loads == 2  # one reload for all, paced after the last one
    assert clock.now() == 1_800_000_000.0 + cache.miss_interval


async def test_a_flood_of_unknown_keys_costs_one_reload_per_interval(clock: FakeClock) -> None:
    keys = Keys()
    known = keys.add("shop")
    cache = KeyCache(keys, clock)
    await _lookups(cache, [known])
    for burst in range(1, 4):
        before = clock.now()
        assert await _lookups(cache, [uuid.uuid4().hex for _ in range(500)]) == [None] * 500
        assert keys.loads == 1 + burst
        assert clock.now() - before == cache.miss_interval  # waited for its turn, once
    # a known key never waits nor loads
    clock.advance(0.5)
    assert (await _lookups(cache, [known] * 100))[0].name == "shop" and keys.loads == 4


async def test_an_unknown_key_while_the_store_is_down_is_an_error_not_a_miss(
    clock: FakeClock,
) -> None:
    keys = Keys()
    known = keys.add("shop")
    cache = KeyCache(keys, clock)
    await _lookups(cache, [known])
    keys.down = True
    clock.advance(5)
    got = await _lookups(cache, [uuid.uuid4().hex for _ in range(100)] + [known])
    assert all(isinstance(g, StoreError) for g in got[:-1]) and got[-1].name == "shop"
    assert keys.loads == 2
    # within the interval nobody asks the store again; after it, one request does
    [again] = await _lookups(cache, [uuid.uuid4().hex])
    assert isinstance(again, StoreError) and keys.loads == 2
    clock.advance(cache.miss_interval)
    keys.down = False
    new = keys.add("fresh")
    assert (await _lookups(cache, [new]))[0].name == "fresh" and keys.loads == 3


async def test_a_removed_key_is_refused_after_the_next_reload(clock: FakeClock) -> None:
    keys = Keys()
    gone, stays = keys.add("old"), keys.add("shop")
    cache = KeyCache(keys, clock)
    assert (await _lookups(cache, [gone]))[0].name == "old"
    del keys.rows[gone]
    clock.advance(cache.ttl + 1)
    assert (await _lookups(cache, [stays]))[0].name == "shop"  # and refreshes in the background
    assert cache._flight is not None
    await cache._flight
    assert await _lookups(cache, [gone]) == [None]
    assert keys.loads == 3  # a miss is final only after a load begun after it arrived


def test_unknown_key_with_the_store_down_is_503_with_retry_after(
    sqlite_store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    with server(sqlite_store, tmp_path, clock) as s:
        assert _post(s, s.project["public_key"]) == 200  # warm
        cache = s.client.app.state.error_keys[1]  # type: ignore[attr-defined]

        def down() -> list[tuple[str, int, str, bool]]:
            raise StoreError("store down for the test")

        cache.load = down
        clock.advance(5)
        r = s.client.post(
            f"/api/{s.project['id']}/envelope/",
            content=envelope(msg_event("x")),
            headers=ENVELOPE | s.sentry(uuid.uuid4().hex),
        )
        assert r.status_code == 503 and r.headers["Retry-After"] == "30", r.text
        # the known project's events are still taken into the spool
        assert _post(s, s.project["public_key"]) == 200


def _post(s: Server, key: str) -> int:
    r = s.client.post(
        f"/api/{s.project['id']}/envelope/",
        content=envelope(msg_event("x")),
        headers=ENVELOPE | s.sentry(key),
    )
    return r.status_code
