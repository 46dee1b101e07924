"""The low-rate senders' HTTP client reads whole answers over a real socket, up to its limit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from nachtwacht.httpclient import MAX_BODY, HttpClient

BIG = 300_000  # several of aiohttp's 64 KiB chunks: a single read() answered only the first


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * BIG)

    async def huge(_: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse()
        await answer.prepare(_)
        for _i in range(MAX_BODY // 65536 + 4):
            await answer.write(b"y" * 65536)
        return answer

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_get("/huge", huge)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_body_of_several_chunks_is_read_whole(server: str) -> None:
    async with HttpClient(base_url=server) as client:
        answer = await client.get("/big")
    assert answer.status_code == 200 and len(answer.content) == BIG


async def test_a_body_past_the_limit_is_cut_at_the_limit(server: str) -> None:
    async with HttpClient(base_url=server) as client:
        answer = await client.get("/huge")
    assert len(answer.content) == MAX_BODY
