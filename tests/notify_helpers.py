"""Real receivers for notification tests: an HTTP endpoint and an SMTP server."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from nachtwacht.config.loader import parse_config
from nachtwacht.config.schema import Settings
from nachtwacht.notify.outbox import OutboundMessage, enqueue
from nachtwacht.store.db import Store


@dataclass
class Seen:
    path: str
    method: str
    headers: dict[str, str]
    query: dict[str, str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class Receiver:
    """An aiohttp server on 127.0.0.1: answers `answers` in turn (then 200), after `delay`."""

    answers: list[int] = field(default_factory=list)
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)  # sent with each non-2xx answer
    seen: list[Seen] = field(default_factory=list)
    keys: Counter[str] = field(default_factory=Counter)
    port: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # port 0: the kernel picks a free port as it binds, so no other test can take it first
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def idle(self) -> bool:
        """No connection open: every request that reached the socket has been handled.

        aiohttp drops a connection only once its handler is done, and a sender that died
        closes its connections; so after a kill, `idle()` means that all it had sent before
        dying has been counted (what reached the socket may wait for the loop to read it).
        """
        server = self._runner.server if self._runner is not None else None
        return server is None or not server.connections

    async def _handle(self, request: web.Request) -> web.Response:
        # counted on arrival: a delivery happened even if the sender dies before the answer
        self.seen.append(
            Seen(
                request.path,
                request.method,
                dict(request.headers),
                dict(request.query),
                await request.text(),
            )
        )
        self.keys[request.headers.get("Idempotency-Key", "")] += 1
        self.arrived.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.answers.pop(0) if self.answers else 200
        return web.Response(
            status=status,
            text="ok" if status < 300 else f"answer {status}",
            headers=self.headers if status >= 300 else None,
        )


class Mailbox:
    """aiosmtpd handler keeping every accepted message."""

    def __init__(self) -> None:
        self.messages: list[Envelope] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.messages.append(envelope)
        return "250 OK"


class Authenticator:
    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user.encode(), password.encode()
        self.logins: list[bytes] = []

    def __call__(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            self.logins.append(auth_data.login)
            ok = auth_data.login == self.user and auth_data.password == self.password
            return AuthResult(success=ok, handled=False)
        return AuthResult(success=False, handled=False)


class PortZeroController(Controller):
    """aiosmtpd's Controller on a port the kernel picks as it binds (read back as `.port`)."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=0, **kwargs)

    def _create_server(self) -> Any:
        created = super()._create_server()

        async def bound() -> asyncio.AbstractServer:
            server = await created
            # start() then connects to `.port` to check the server answers
            self.port = server.sockets[0].getsockname()[1]
            return server

        return bound()


def smtp_server(**kwargs: Any) -> tuple[Controller, Mailbox]:
    box = Mailbox()
    controller = PortZeroController(box, **kwargs)
    controller.start()
    return controller, box


def settings(yaml_text: str, store: Store | None = None) -> Settings:
    url = store.url if store is not None else "sqlite:///:memory:"
    return parse_config(f"store:\n  url: '{url}'\n" + yaml_text, "test.yaml")


def queue(store: Store, messages: list[OutboundMessage], now: float) -> list[int]:
    with store.begin() as conn:
        return enqueue(conn, messages, now)


def webhook_messages(n: int, channel: str = "hook", prefix: str = "k") -> list[OutboundMessage]:
    return [
        OutboundMessage(
            idempotency_key=f"{prefix}{i}",
            kind="emergency_alert",
            channel=channel,
            subject=f"message {i}",
            body=f"body {i}",
        )
        for i in range(n)
    ]
