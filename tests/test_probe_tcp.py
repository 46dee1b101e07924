"""The `tcp` probe against real listeners on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import ValidationError

from nachtwacht.clock import FakeClock
from nachtwacht.probes.context import ProbeContext
from nachtwacht.probes.kinds.tcp import Config, ProbeImpl, connect_reason
from nachtwacht.probes.registry import build
from nachtwacht.probes.results import Status
from tests.conftest import closed_port, free_port


@dataclass
class Listener:
    """A TCP server that counts connections and notices when the client hangs up."""

    port: int
    accepted: int = 0
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    target = Listener(free_port())

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target.accepted += 1
        await reader.read()  # b"" once the probe closes its side
        target.hung_up.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", target.port)
    try:
        yield target
    finally:
        server.close()
        await server.wait_closed()


def make(host: str, port: int, **keys: Any) -> ProbeImpl:
    config = Config(name="port", kind="tcp", host=host, port=port, **keys)
    return ProbeImpl(config, ProbeContext(clock=FakeClock()))


async def test_open_port_is_ok_with_connect_latency(listener: Listener) -> None:
    result = await make("127.0.0.1", listener.port).check()
    assert result.status is Status.OK
    assert result.message.startswith(f"connected to 127.0.0.1:{listener.port} in ")
    assert result.message.endswith(" ms")
    assert result.latency_ms is not None and 0 < result.latency_ms < 1000
    assert result.value == result.latency_ms
    assert listener.accepted == 1


async def test_probe_closes_its_connection(listener: Listener) -> None:
    await make("127.0.0.1", listener.port).check()
    # The server sees end-of-file: checks every few seconds must not pile up sockets.
    await asyncio.wait_for(listener.hung_up.wait(), 2)


async def test_refused_port_is_critical_with_clear_message() -> None:
    port = closed_port()
    result = await make("127.0.0.1", port).check()
    assert result.status is Status.CRITICAL
    assert result.message == f"cannot connect to 127.0.0.1:{port}: Connection refused"
    assert result.value is None


async def test_unresolvable_host_is_critical_saying_dns_failed() -> None:
    probe = make("nachtwacht-test.invalid", 80)
    # `.invalid` never resolves (RFC 6761); bound it anyway on a machine with a slow resolver.
    result = await asyncio.wait_for(probe.check(), 10)
    assert result.status is Status.CRITICAL
    assert result.message.startswith("DNS lookup failed for nachtwacht-test.invalid: ")


async def test_connect_within_latency_limits_is_ok(listener: Listener) -> None:
    probe = make("127.0.0.1", listener.port, latency_warn="500ms", latency_critical="1s")
    result = await probe.check()
    assert result.status is Status.OK
    assert "slower" not in result.message


async def test_connect_slower_than_latency_warn_is_warning(listener: Listener) -> None:
    # A local connect cannot be slowed down for real; a 0s limit is exceeded by any connect.
    probe = make("127.0.0.1", listener.port, latency_warn=0, latency_critical=5)
    result = await probe.check()
    assert result.status is Status.WARNING
    assert result.message.endswith("(slower than 0s)")
    assert result.value is not None and result.value > 0


async def test_connect_slower_than_latency_critical_is_critical(listener: Listener) -> None:
    probe = make("127.0.0.1", listener.port, latency_warn=0, latency_critical=0)
    result = await probe.check()
    assert result.status is Status.CRITICAL
    assert result.message.endswith("(slower than 0s)")


async def test_run_keeps_the_measured_connect_latency(listener: Listener) -> None:
    result = await make("127.0.0.1", listener.port).run()
    assert result.status is Status.OK
    assert result.latency_ms == result.value


async def test_run_turns_a_refused_port_into_a_result() -> None:
    port = closed_port()
    result = await make("127.0.0.1", port, timeout=1).run()
    assert result.status is Status.CRITICAL
    assert "Connection refused" in result.message
    assert result.latency_ms is not None


async def test_registry_builds_the_tcp_probe(listener: Listener) -> None:
    config = Config(name="db-port", kind="tcp", host="127.0.0.1", port=listener.port)
    probe = build(config, ProbeContext(clock=FakeClock()))
    assert isinstance(probe, ProbeImpl)
    assert (await probe.run()).status is Status.OK


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_port_out_of_range_is_rejected(port: int) -> None:
    with pytest.raises(ValidationError, match="port"):
        Config(name="p", kind="tcp", host="127.0.0.1", port=port)


def test_empty_host_is_rejected() -> None:
    with pytest.raises(ValidationError, match="host"):
        Config(name="p", kind="tcp", host="", port=80)


def test_every_address_refusing_reads_as_connection_refused() -> None:
    # What Python 3.11's asyncio raises when ::1 and 127.0.0.1 both refuse.
    both = OSError(
        "Multiple exceptions: [Errno 111] Connect call failed ('::1', 1, 0, 0), "
        "[Errno 111] Connect call failed ('127.0.0.1', 1)"
    )
    assert connect_reason(both) == "Connection refused"
    mixed = OSError(
        "Multiple exceptions: [Errno 101] Network is unreachable, "
        "[Errno 111] Connect call failed ('127.0.0.1', 1)"
    )
    assert connect_reason(mixed) == str(mixed)
    assert connect_reason(ConnectionRefusedError(111, "Connect call failed")) == (
        "Connection refused"
    )
