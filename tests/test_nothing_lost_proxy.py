"""A TCP proxy to cut a real PostgreSQL connection without stopping the shared server.

`TcpProxy` listens on its own port and forwards to the target (127.0.0.1:5432). `cut()` closes
every open connection and stops listening (new connections are refused); `restore()` listens
again on the same port. It runs its own event loop in a thread, so it serves a uvicorn
thread, a `nachtwacht serve` subprocess and the test alike.

`pg_database()` makes a fresh database on the shared server, to be reached through a proxy.
The tests at the end check the proxy itself.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pytest
from sqlalchemy import create_engine, text

from nachtwacht.store.db import Store, StoreError
from tests.conftest import PG_ADMIN, free_port, need_service


class TcpProxy:
    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5432) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> None:
        """Drop every connection and refuse new ones (an unplugged database server)."""
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def close(self) -> None:
        with suppress(Exception):
            self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def listening(self) -> bool:
        return self._server is not None

    def _call(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(15)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.discard(writer)
        self._writers.discard(up_writer)


@contextmanager
def pg_database() -> Iterator[str]:
    """A fresh database on the shared server; yields its name, drops it afterwards."""
    need_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"nw_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def proxied_url(proxy: TcpProxy, database: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0]
    host_part = base.rsplit("@", 1)
    return f"{host_part[0]}@127.0.0.1:{proxy.port}/{database}"


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    p = TcpProxy().start()
    yield p
    p.close()


def test_a_cut_breaks_open_connections_and_refuses_new_ones(proxy: TcpProxy) -> None:
    with pg_database() as name:
        store = Store(proxied_url(proxy, name))
        try:
            with store.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar_one() == 1
                proxy.cut()
                with pytest.raises(Exception, match="(?i)closed|terminat|lost|connection"):
                    conn.execute(text("SELECT 2"))
            with (
                pytest.raises(StoreError, match="(?i)refused|connect"),
                store.connect() as again,
            ):
                again.execute(text("SELECT 3"))
            proxy.restore()
            with store.connect() as conn:  # the pool's dead connection is replaced
                assert conn.execute(text("SELECT 4")).scalar_one() == 4
        finally:
            store.dispose()
