"""The `redis` probe against the real Redis server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError

from nachtwacht.clock import FakeClock
from nachtwacht.probes.context import ProbeContext
from nachtwacht.probes.kinds.redis import Config, ProbeImpl
from nachtwacht.probes.results import Status
from tests.conftest import REDIS_URL, closed_port, need_service

Maker = Callable[..., ProbeImpl]


@pytest.fixture
def redis_url() -> str:
    need_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture
async def make_probe() -> AsyncIterator[Maker]:
    """Builds probes and closes every one of them after the test."""
    made: list[ProbeImpl] = []

    def make(**keys: Any) -> ProbeImpl:
        keys.setdefault("timeout", 5)
        probe = ProbeImpl(
            Config(name="cache", kind="redis", **keys), ProbeContext(clock=FakeClock())
        )
        made.append(probe)
        return probe

    yield make
    for probe in made:
        await probe.close()


async def test_reachable_redis_answers_ping_with_round_trip(
    redis_url: str, make_probe: Maker
) -> None:
    result = await make_probe(url=redis_url).run()
    assert result.status is Status.OK, result.message
    assert result.message.startswith("PONG from 127.0.0.1:6379 in ")
    assert result.value is not None and 0 < result.value < 5000


async def test_refused_port_is_critical_with_clear_message(make_probe: Maker) -> None:
    port = closed_port()
    result = await make_probe(url=f"redis://127.0.0.1:{port}/0").run()
    assert result.status is Status.CRITICAL
    assert result.message == f"cannot connect to 127.0.0.1:{port}: Connection refused"
    assert result.latency_ms is not None and result.latency_ms < 1000  # no slow retry loop


async def test_connection_dropped_by_server_is_replaced_without_a_failed_check(
    redis_url: str, make_probe: Maker
) -> None:
    # e.g. Redis `timeout` closing idle clients, or a restart between two checks
    probe = make_probe(url=redis_url)
    assert (await probe.run()).status is Status.OK
    assert probe._client is not None
    probe_id = await probe._client.client_id()  # only this probe's connection is cut
    killer = aioredis.Redis.from_url(redis_url)
    try:
        assert await killer.client_kill_filter(_id=probe_id) == 1
    finally:
        await killer.aclose()
    after = await probe.run()
    assert after.status is Status.OK, after.message


async def test_info_field_breaching_critical_is_critical(redis_url: str, make_probe: Maker) -> None:
    result = await make_probe(url=redis_url, info_field="connected_clients", critical=0).run()
    assert result.status is Status.CRITICAL
    assert result.value is not None and result.value >= 1
    assert result.message == f"connected_clients = {int(result.value)} (> 0)"


async def test_info_field_breaching_warn_is_warning(redis_url: str, make_probe: Maker) -> None:
    result = await make_probe(url=redis_url, info_field="used_memory", warn=1, critical=1e15).run()
    assert result.status is Status.WARNING
    assert result.value is not None and result.value > 1000
    # a byte count is written in full, not as 1.2e+06
    assert result.message == f"used_memory = {int(result.value)} (> 1)"


async def test_info_field_within_limits_is_ok(redis_url: str, make_probe: Maker) -> None:
    result = await make_probe(
        url=redis_url, info_field="connected_clients", warn=100_000, critical=200_000
    ).run()
    assert result.status is Status.OK
    assert result.message.startswith("connected_clients = ")


async def test_lower_is_worse_info_threshold(redis_url: str, make_probe: Maker) -> None:
    result = await make_probe(
        url=redis_url, info_field="connected_clients", op="<", critical=1_000_000
    ).run()
    assert result.status is Status.CRITICAL
    assert result.message.endswith("(< 1000000)")


async def test_nested_keyspace_field_is_reachable_with_a_dot(
    redis_url: str, make_probe: Maker
) -> None:
    writer = aioredis.Redis.from_url(redis_url)
    key = f"nachtwacht-test-{uuid.uuid4().hex}"
    db = writer.connection_pool.connection_kwargs.get("db", 0)
    try:
        await writer.set(key, "1", ex=60)
        result = await make_probe(url=redis_url, info_field=f"db{db}.keys", critical=0).run()
    finally:
        await writer.delete(key)
        await writer.aclose()
    assert result.status is Status.CRITICAL, result.message
    assert result.value is not None and result.value >= 1


async def test_unknown_info_field_is_unknown_naming_it(redis_url: str, make_probe: Maker) -> None:
    result = await make_probe(url=redis_url, info_field="no_such_field", warn=1).run()
    assert result.status is Status.UNKNOWN
    assert result.message == "INFO from 127.0.0.1:6379 has no field 'no_such_field'"
    assert result.value is None


async def test_text_info_field_is_unknown_naming_it(redis_url: str, make_probe: Maker) -> None:
    result = await make_probe(url=redis_url, info_field="role", warn=1).run()
    assert result.status is Status.UNKNOWN
    assert result.message == "INFO field 'role' is not a number: 'master'" or (
        result.message == "INFO field 'role' is not a number: 'slave'"
    )


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:6379", "127.0.0.1:6379", "redis+ssl://127.0.0.1:6379"]
)
def test_bad_url_scheme_is_a_config_error(url: str) -> None:
    with pytest.raises(ValidationError, match="URL scheme must be redis://"):
        Config(name="cache", kind="redis", url=url)


def test_default_url_is_local_redis() -> None:
    assert Config(name="cache", kind="redis").url == "redis://127.0.0.1:6379/0"
