"""Small real targets for tests: a TCP listener that can be stopped and started again."""

from __future__ import annotations

import asyncio

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
    from nachtwacht.auth import service

    store.migrate()
    with store.begin() as conn:
        return service.create_token(conn, f"test-{role}", role, now, actor="tests")["token"]
