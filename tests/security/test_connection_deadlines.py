"""The read deadlines and the connection bound of `web/connections.py`, in this process.

A real uvicorn server on the test's event loop (asyncio, where `serve` uses uvloop: the
subprocess tests in test_slow_connections.py cover that) with timeouts of a fraction of a
second. Assertions bound how long a close may take generously and never how short it is,
except where the point is that nothing was cut at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from nachtwacht.web.connections import ConnectionLimits, connection_budget, guarded_protocol
from tests.helpers import until

# a close must come within this (the deadlines are 0.3 s): a loaded machine is slow, not wrong
CLOSED_WITHIN = 10.0
QUICK = ConnectionLimits(
    header_timeout=0.3, body_timeout=0.3, body_min_rate=100, max_connections=1000
)


async def _slow(request: Request) -> PlainTextResponse:
    await asyncio.sleep(1.0)  # longer than every deadline: the server's own time
    return PlainTextResponse("slow ok")


def _app(seen: list[str]) -> Starlette:
    async def echo(request: Request) -> PlainTextResponse:
        body = await request.body()  # ClientDisconnect when the body is timed out
        seen.append("body read")
        return PlainTextResponse(f"{len(body)} bytes")

    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/echo", echo, methods=["POST"]),
            Route("/ok", ok, methods=["GET", "POST"]),
            Route("/slow", _slow),
        ]
    )


@asynccontextmanager
async def serving(
    limits: ConnectionLimits = QUICK, seen: list[str] | None = None, keep_alive: float = 5.0
) -> AsyncIterator[tuple[int, uvicorn.Server]]:
    config = uvicorn.Config(
        _app(seen if seen is not None else []),
        host="127.0.0.1",
        port=0,
        http=guarded_protocol(limits),
        lifespan="off",
        log_level="warning",
        timeout_keep_alive=keep_alive,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    # Server.serve without its signal handlers, which are the test runner's
    config.load()
    server.lifespan = config.lifespan_class(config)
    await server.startup()
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield port, server
    finally:
        server.force_exit = True  # do not wait for the slow clients this test left open
        await server.shutdown()


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends before it closes; fails if it keeps the connection."""
    try:
        return await asyncio.wait_for(reader.read(), CLOSED_WITHIN)
    except ConnectionResetError:
        # a client still writing when the server closes gets a reset after the answer (TCP
        # sends what was written before the RST, in order); asyncio's read() raises without
        # handing over what it already buffered, so take that
        return bytes(reader._buffer)


async def _trickle(writer: asyncio.StreamWriter, piece: bytes, every: float) -> None:
    # keeps sending until the server hangs up: a pause never exceeds `every`
    try:
        while True:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(every)
    except (ConnectionError, OSError):
        return


async def test_a_connection_that_sends_nothing_or_half_its_headers_gets_408_and_is_closed() -> None:
    async with serving() as (port, _server):
        silent_r, silent_w = await _connect(port)
        half_r, half_w = await _connect(port)
        half_w.write(b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        # a header byte every 50 ms never pauses long: the deadline is for all the headers
        trickle = asyncio.create_task(_trickle(half_w, b"a", 0.05))
        try:
            assert (await _until_closed(silent_r)).startswith(b"HTTP/1.1 408 ")
            assert (await _until_closed(half_r)).startswith(b"HTTP/1.1 408 ")
        finally:
            trickle.cancel()
            silent_w.close()
            half_w.close()


async def test_the_next_request_on_a_kept_alive_connection_has_a_header_deadline_too() -> None:
    async with serving() as (port, _server):
        reader, writer = await _connect(port)
        writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        first = await asyncio.wait_for(reader.readuntil(b"ok"), CLOSED_WITHIN)
        assert first.startswith(b"HTTP/1.1 200 ")
        # each byte resets uvicorn's keep-alive timer: only the header deadline ends this
        writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        trickle = asyncio.create_task(_trickle(writer, b"a", 0.05))
        try:
            assert (await _until_closed(reader)).startswith(b"HTTP/1.1 408 ")
        finally:
            trickle.cancel()
            writer.close()


async def test_a_connection_answered_before_its_body_arrived_is_still_closed_once_idle() -> None:
    async with serving(keep_alive=0.3) as (port, _server):
        reader, writer = await _connect(port)
        # /ok answers without reading the body: the rest of it arrives after the answer
        writer.write(b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"ok"), CLOSED_WITHIN)).startswith(
            b"HTTP/1.1 200 "
        )
        writer.write(b"0123456789")  # each byte disarmed uvicorn's keep-alive timer
        assert await _until_closed(reader) == b""
        writer.close()


async def test_a_paused_body_gets_408_and_the_app_is_told_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []
    caplog.set_level(logging.INFO)
    async with serving(seen=seen) as (port, _server):
        reader, writer = await _connect(port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        try:
            assert (await _until_closed(reader)).startswith(b"HTTP/1.1 408 ")
        finally:
            writer.close()
        await asyncio.sleep(0.1)  # the app's task ends on the next turns of the loop
    assert seen == []  # the body never counted as read
    # a timed-out client is no server error: no "Exception in ASGI application"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "1 body timeout" in caplog.text


async def test_a_body_trickled_below_the_minimum_rate_is_cut_though_it_never_pauses_long() -> None:
    async with serving() as (port, _server):
        reader, writer = await _connect(port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        # 20 bytes/s against a minimum of 100, with pauses far under the 0.3 s body timeout
        trickle = asyncio.create_task(_trickle(writer, b"a", 0.05))
        try:
            assert (await _until_closed(reader)).startswith(b"HTTP/1.1 408 ")
        finally:
            trickle.cancel()
            writer.close()


async def test_a_steady_body_and_a_slow_app_are_not_cut() -> None:
    limits = ConnectionLimits(
        header_timeout=0.3, body_timeout=1.0, body_min_rate=100, max_connections=1000
    )
    async with serving(limits) as (port, _server):
        reader, writer = await _connect(port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1500\r\n\r\n")
        # 1.5 s in all, longer than the body timeout: only pauses and the rate count
        for _ in range(15):
            writer.write(b"x" * 100)
            await writer.drain()
            await asyncio.sleep(0.1)
        answer = await asyncio.wait_for(reader.readuntil(b"1500 bytes"), CLOSED_WITHIN)
        assert answer.startswith(b"HTTP/1.1 200 ")
        # the app takes 1 s, more than the header and body deadlines together
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.readuntil(b"slow ok"), CLOSED_WITHIN)
        assert answer.startswith(b"HTTP/1.1 200 ")
        writer.close()


async def _wait_until(what: str, items: set[Any], count: int) -> None:
    # the kernel completes a connect before uvicorn accepts it; the order of accepts matters
    await until(lambda: len(items) >= count, f"the server to have {what}", CLOSED_WITHIN, 0.01)


async def test_the_connection_waiting_longest_is_shed_so_a_new_request_gets_in() -> None:
    limits = ConnectionLimits(
        header_timeout=60, body_timeout=60, body_min_rate=0, max_connections=5
    )
    async with serving(limits) as (port, server):
        held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        for n in range(5):
            held.append(await _connect(port))
            held[-1][1].write(b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            await _wait_until(f"{n + 1} connections", server.server_state.connections, n + 1)
        reader, writer = await _connect(port)
        writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        fresh = await _until_closed(reader)
        assert fresh.startswith(b"HTTP/1.1 200 ") and fresh.endswith(b"ok"), fresh
        shed = await _until_closed(held[0][0])
        assert shed.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in shed
        # the other four still wait for their headers
        for r, _w in held[1:]:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(r.read(1), 0.05)
        for _r, w in held:
            w.close()
        writer.close()


async def test_when_every_connection_is_a_request_being_worked_on_a_new_one_gets_503() -> None:
    limits = ConnectionLimits(
        header_timeout=60, body_timeout=60, body_min_rate=0, max_connections=2
    )
    async with serving(limits) as (port, server):
        working = []
        for n in range(2):
            reader, writer = await _connect(port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            working.append((reader, writer))
            await _wait_until(f"{n + 1} requests", server.server_state.tasks, n + 1)
        reader, writer = await _connect(port)
        assert (await _until_closed(reader)).startswith(b"HTTP/1.1 503 ")
        writer.close()
        for r, w in working:
            assert (await _until_closed(r)).startswith(b"HTTP/1.1 200 ")
            w.close()


def test_the_default_bound_leaves_descriptors_for_the_spool_the_store_and_probes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1024, 4096))
    # a quarter of the soft limit stays in reserve, plus one per probe
    assert connection_budget(None, probes=10) == (1024 - 256 - 10, 1024)
    assert connection_budget(200, probes=10) == (200, 1024)  # as configured
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (256, 256))
    assert connection_budget(None) == (256 - 64, 256)  # never less than 64 in reserve
