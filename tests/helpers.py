"""Small real targets for tests (a TCP listener that can be stopped and started again), and
the one bounded `until()` wait every test polls with."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from nachtwacht.config.loader import parse_config
from nachtwacht.config.schema import Settings


class TcpTarget:
    """A real TCP server on 127.0.0.1 that accepts and closes connections."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        async def handle(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.close()

        self._server = await asyncio.start_server(handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


def settings_for(yaml_text: str, store_url: str) -> Settings:
    return parse_config(f"store:\n  url: {store_url}\n" + yaml_text, "test.yaml")


def admin_token(store, now: float = 1_800_000_000.0, role: str = "admin") -> str:  # noqa: ANN001
    """An API token for tests that drive the protected API (`Authorization: Bearer ...`)."""
    from nachtwacht.auth import tokens

    store.migrate()
    with store.begin() as conn:
        return tokens.create_token(conn, f"test-{role}", role, now, actor="tests")["token"]


async def until(
    condition: Callable[[], object], what: str, timeout: float = 30.0, interval: float = 0.02
) -> None:
    """Wait (bounded) until `condition()` holds: the assertion is on what, not on when.

    The bound is generous on purpose: it only stops a broken test from hanging, so it must
    hold on a loaded 2-core machine running several suites at once.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


def until_sync(
    condition: Callable[[], object], what: str, timeout: float = 30.0, interval: float = 0.05
) -> None:
    """`until` for tests without an event loop (the condition may do blocking I/O)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
