"""The `heartbeat` probe and the /ping router, against a real store and a fast-forwarded clock."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select

from nachtwacht.clock import FakeClock
from nachtwacht.probes.context import ProbeContext
from nachtwacht.probes.heartbeats import MAX_BODY_BYTES, first_seen_key, last_events, record_ping
from nachtwacht.probes.kinds.heartbeat import Config, ProbeImpl
from nachtwacht.probes.results import Status
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from nachtwacht.web.ping import router
from nachtwacht.web.state import AppState, install
from tests.helpers import settings_for

TOKEN = "nightly-backup-7f3a"
HOUR, MINUTE = 3600.0, 60.0


def make_probe(store: Store | None, clock: FakeClock, token: str = TOKEN, **keys) -> ProbeImpl:
    keys.setdefault("period", "1h")
    config = Config(name="backup", kind="heartbeat", token=token, **keys)
    return ProbeImpl(config, ProbeContext(clock=clock, store=store))


def ping(store: Store, clock: FakeClock, event: str = "success", token: str = TOKEN) -> None:
    with store.begin() as conn:
        record_ping(conn, token, event, clock.now(), None, "127.0.0.1")


def pings(store: Store, token: str = TOKEN) -> list[tuple[str, float, str | None, str | None]]:
    c = t.heartbeat_pings.c
    with store.connect() as conn:
        rows = conn.execute(
            select(c.event, c.ts, c.body, c.remote_addr).where(c.token == token).order_by(c.id)
        )
        return [tuple(r) for r in rows]


# -- config ----------------------------------------------------------------------------------


def test_config_defaults_evaluate_every_30s_with_5m_grace() -> None:
    cfg = Config(name="b", kind="heartbeat", token=TOKEN, period="1h")
    assert (cfg.interval, cfg.period, cfg.grace) == (30.0, 3600.0, 300.0)


@pytest.mark.parametrize("token", ["short", "has space in it", "semi;colon99", "x" * 129])
def test_malformed_token_is_rejected_at_config_time(token: str) -> None:
    with pytest.raises(ValidationError, match="token"):
        Config(name="b", kind="heartbeat", token=token, period="1h")


def test_period_is_required() -> None:
    with pytest.raises(ValidationError, match="period"):
        Config(name="b", kind="heartbeat", token=TOKEN)


# -- the probe -------------------------------------------------------------------------------


async def test_on_time_ping_is_ok_on_every_backend(store: Store, clock: FakeClock) -> None:
    # the longest token allowed: its first-seen key must still fit engine_meta.key everywhere
    token = "t" * 128
    probe = make_probe(store, clock, token=token)
    ping(store, clock, token=token)
    clock.advance(20 * MINUTE)
    result = await probe.check()
    assert result.status is Status.OK
    assert result.value == 20 * MINUTE
    assert result.message == "last ping 20m ago, expected every 1h (+5m grace)"
    with store.connect() as conn:
        assert store.get_meta(conn, first_seen_key(token)) == clock.now()


async def test_silence_past_period_plus_grace_is_critical_late(
    sqlite_store: Store, clock: FakeClock
) -> None:
    probe = make_probe(sqlite_store, clock)
    ping(sqlite_store, clock)
    clock.advance(HOUR + 5 * MINUTE)  # exactly period + grace: still on time
    assert (await probe.check()).status is Status.OK
    clock.advance(58 * MINUTE)
    result = await probe.check()
    assert result.status is Status.CRITICAL
    assert result.message == "late: last ping 2h 3m ago, expected every 1h (+5m grace)"
    assert result.value == 2 * HOUR + 3 * MINUTE
    ping(sqlite_store, clock)
    assert (await probe.check()).status is Status.OK


async def test_fail_ping_is_critical_until_the_next_success(
    sqlite_store: Store, clock: FakeClock
) -> None:
    probe = make_probe(sqlite_store, clock)
    ping(sqlite_store, clock)
    clock.advance(10 * MINUTE)
    ping(sqlite_store, clock, "fail")
    failed_at = clock.now()
    clock.advance(2 * MINUTE)
    result = await probe.check()
    assert result.status is Status.CRITICAL
    assert result.message == "job reported failure at 2027-01-15T08:10:00Z (2m ago)"
    assert result.value == 12 * MINUTE  # still seconds since the last success
    # a retry that starts does not clear the failure; only a success does
    ping(sqlite_store, clock, "start")
    clock.advance(MINUTE)
    result = await probe.check()
    assert result.status is Status.CRITICAL and "running again since 1m ago" in result.message
    ping(sqlite_store, clock)
    result = await probe.check()
    assert result.status is Status.OK, result.message
    assert failed_at < clock.now()


async def test_start_without_finish_is_critical_after_grace(
    sqlite_store: Store, clock: FakeClock
) -> None:
    probe = make_probe(sqlite_store, clock)
    ping(sqlite_store, clock)
    clock.advance(HOUR)
    ping(sqlite_store, clock, "start")
    clock.advance(4 * MINUTE)
    running = await probe.check()
    assert running.status is Status.OK
    assert running.message == "running: started 4m ago (last success 1h 4m ago)"
    clock.advance(8 * MINUTE)
    result = await probe.check()
    assert result.status is Status.CRITICAL
    assert result.message == "started 12m ago and has not finished (grace 5m)"
    ping(sqlite_store, clock)
    assert (await probe.check()).status is Status.OK


async def test_running_job_is_not_late_while_within_grace_of_its_start(
    sqlite_store: Store, clock: FakeClock
) -> None:
    probe = make_probe(sqlite_store, clock)
    ping(sqlite_store, clock)
    clock.advance(HOUR + 4 * MINUTE)
    ping(sqlite_store, clock, "start")  # started late, but started
    clock.advance(3 * MINUTE)
    assert (await probe.check()).status is Status.OK


async def test_never_pinged_counts_lateness_from_first_seen_across_restarts(
    sqlite_store: Store, clock: FakeClock
) -> None:
    probe = make_probe(sqlite_store, clock)
    result = await probe.check()
    assert result.status is Status.OK and result.value is None
    assert result.message.startswith("waiting for the first ping (first seen 0s ago")
    clock.advance(HOUR)
    # a restart builds a new probe: it must not reset the first-seen time
    restarted = make_probe(sqlite_store, clock)
    assert (await restarted.check()).status is Status.OK
    clock.advance(6 * MINUTE)
    result = await restarted.check()
    assert result.status is Status.CRITICAL
    assert result.message == "never pinged: first seen 1h 6m ago, expected every 1h (+5m grace)"


async def test_without_a_store_the_probe_is_unknown(clock: FakeClock) -> None:
    result = await make_probe(None, clock).check()
    assert result.status is Status.UNKNOWN and "store" in result.message


def test_last_events_leaves_out_failures_older_than_the_last_success(
    sqlite_store: Store, clock: FakeClock
) -> None:
    ping(sqlite_store, clock, "fail")
    clock.advance(60)
    ping(sqlite_store, clock, "start")
    clock.advance(60)
    ping(sqlite_store, clock)
    ping(sqlite_store, clock, token="other-token-123")
    with sqlite_store.connect() as conn:
        assert last_events(conn, TOKEN) == {"success": clock.now()}
    clock.advance(60)
    ping(sqlite_store, clock, "start")
    with sqlite_store.connect() as conn:
        assert last_events(conn, TOKEN) == {"success": clock.now() - 60, "start": clock.now()}
        assert last_events(conn, "never-pinged-1") == {}


# -- the /ping router ------------------------------------------------------------------------


@pytest.fixture
def client(sqlite_store: Store, clock: FakeClock) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(router)
    # a runtime without a drainer: pings are only written to the store
    runtime = SimpleNamespace(store=sqlite_store, clock=clock)
    install(app, AppState.of(runtime, heartbeat_tokens={TOKEN}))
    with TestClient(app) as c:
        yield c


def test_ping_is_committed_before_the_response(
    client: TestClient, sqlite_store: Store, clock: FakeClock
) -> None:
    response = client.get(f"/ping/{TOKEN}")
    assert response.status_code == 200 and response.text == "OK"
    assert response.headers["content-type"].startswith("text/plain")
    # a separate engine on the same file sees it: the row is committed, not just flushed
    other = Store(sqlite_store.url)
    try:
        assert pings(other) == [("success", clock.now(), None, "testclient")]
    finally:
        other.dispose()


def test_start_fail_and_every_method_are_recorded(
    client: TestClient, sqlite_store: Store, clock: FakeClock
) -> None:
    assert client.post(f"/ping/{TOKEN}/start").status_code == 200
    clock.advance(1)
    assert client.head(f"/ping/{TOKEN}/fail").status_code == 200
    clock.advance(1)
    assert client.post(f"/ping/{TOKEN}", content=b"backup done: 3.2 GB").status_code == 200
    assert [(e, b) for e, _ts, b, _ in pings(sqlite_store)] == [
        ("start", None),
        ("fail", None),
        ("success", "backup done: 3.2 GB"),
    ]


def test_post_body_is_trimmed_to_10_kb(client: TestClient, sqlite_store: Store) -> None:
    big = ("é" * 20_000).encode()  # multi-byte characters: a cut one must not become garbage
    assert client.post(f"/ping/{TOKEN}/fail", content=big).status_code == 200
    [(_event, _ts, body, _addr)] = pings(sqlite_store)
    assert body is not None and set(body) == {"é"}
    assert len(body.encode()) == MAX_BODY_BYTES


def test_unknown_token_is_404_json_and_not_stored(client: TestClient, sqlite_store: Store) -> None:
    response = client.post("/ping/not-configured-token/fail")
    assert response.status_code == 404
    assert response.json() == {"detail": "no heartbeat probe has this token", "field": "token"}
    assert pings(sqlite_store, "not-configured-token") == []


@pytest.mark.parametrize("token", ["short", "bad!token!here", "x" * 129])
def test_malformed_token_is_400_json(client: TestClient, token: str) -> None:
    response = client.get(f"/ping/{token}")
    assert response.status_code == 400
    body = response.json()
    assert body["field"] == "token" and "8-128 characters" in body["detail"]


def test_openapi_schema_has_no_duplicate_operation_ids(client: TestClient) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        schema = client.app.openapi()
    assert {"get", "post", "head"} <= set(schema["paths"]["/ping/{token}/start"])


async def test_pings_through_http_drive_the_probe(
    client: TestClient, sqlite_store: Store, clock: FakeClock
) -> None:
    probe = make_probe(sqlite_store, clock)
    client.get(f"/ping/{TOKEN}")
    clock.advance(30 * MINUTE)
    assert (await probe.check()).status is Status.OK
    client.get(f"/ping/{TOKEN}/fail")
    result = await probe.check()
    assert result.status is Status.CRITICAL and "job reported failure" in result.message


def test_app_factory_accepts_pings_for_configured_heartbeats(
    sqlite_store: Store, clock: FakeClock
) -> None:
    settings = settings_for(
        f"""
probes:
  - name: backup
    kind: heartbeat
    token: {TOKEN}
    period: 1d
""",
        sqlite_store.url,
    )
    with TestClient(create_app(settings, sqlite_store, clock, start_engine=False)) as c:
        assert c.get(f"/ping/{TOKEN}").status_code == 200
        assert c.get("/ping/someone-elses-token").status_code == 404
    assert [e for e, *_ in pings(sqlite_store)] == ["success"]
