"""Slow and idle connections: read deadlines and a connection bound, in uvicorn's protocol.

uvicorn times out only a keep-alive connection idle after a response. A client that connects
and sends nothing, sends half its headers, or trickles a body a byte at a time holds its
descriptor forever, and about a thousand of them starve the process of descriptors: the
spool, the store and `/healthz` fail with "Too many open files" (issue 12). This module
subclasses uvicorn's `HttpToolsProtocol` (passed to uvicorn as `http=`) so that, while the
server waits for the client, it keeps a deadline:

- headers: a request's line and headers must arrive within `header_timeout` of the
  connection opening (or of the first byte of the next request on a kept-alive connection);
- body: no pause longer than `body_timeout`, and after that grace the body must have come at
  `body_min_rate` bytes per second on average (so a trickle that never pauses long still ends);
- idle keep-alive: uvicorn's own `timeout_keep_alive`, set from `server.keep_alive_timeout`.

A request that misses its deadline is answered `408` (when nothing was answered yet) and
closed; the application sees the client gone. The server's own time (the app working, a
response being written, reading paused because the app has not read what came) never counts.

Connections are bounded by `max_connections` (by default a share of the process's descriptor
limit). When a new connection would exceed it, the connection that has waited longest for its
client (partial headers, a slow body, an idle keep-alive) is shed with a `503` instead, so a
fresh `/healthz` or `/ping` still gets in. Only when every connection is a request being worked
on is the new one refused with `503`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)

Phase = Literal["headers", "body", "idle"]

# how often, at most, the closes are summed up in the log (an attack closes thousands)
LOG_EVERY = 60.0
# with no descriptor limit to go by (RLIM_INFINITY, or no `resource` module)
FALLBACK_MAX_CONNECTIONS = 10_000


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0
    body_timeout: float = 15.0
    body_min_rate: float = 500.0  # bytes per second; 0 turns the rate check off
    max_connections: int = 768


def connection_budget(configured: int | None, probes: int = 0) -> tuple[int, int | None]:
    """(max connections, descriptor limit): the configured bound, or one from RLIMIT_NOFILE.

    The reserve is what the rest of the process needs while connections use the remainder:
    the store's pool, the spool's files, sockets of running probes (one per probe at most),
    notification senders, log files. A quarter of the limit, at least 64, plus one per probe.
    """
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        unlimited = soft == resource.RLIM_INFINITY
    except (ImportError, OSError, ValueError):
        soft, unlimited = -1, True
    if unlimited or soft < 0:
        return (configured or FALLBACK_MAX_CONNECTIONS), None
    if configured is not None:
        return configured, soft
    reserve = max(64, soft // 4) + probes
    return max(16, soft - reserve), soft


@dataclass
class _Shared:
    """State all connections of one server share."""

    limits: ConnectionLimits
    # connections waiting on their client, oldest wait first (dicts keep insertion order)
    waiting: dict[GuardedHttpToolsProtocol, None] = field(default_factory=dict)
    # uvicorn's set of this server's connections (its ServerState's), and how many of them
    # we dropped that are not gone yet
    connections: set[Any] = field(default_factory=set)
    closing: int = 0
    closed: Counter[str] = field(default_factory=Counter)
    logged_at: float | None = None
    flush: asyncio.TimerHandle | None = None

    def oldest_waiting(self, but: GuardedHttpToolsProtocol) -> GuardedHttpToolsProtocol | None:
        for proto in self.waiting:
            if proto is not but:
                return proto
        return None

    def count(self, reason: str, loop: asyncio.AbstractEventLoop) -> None:
        """One log line at once, then at most one a minute summing up the rest."""
        self.closed[reason] += 1
        if self.flush is not None:
            return
        now = loop.time()
        if self.logged_at is None or now - self.logged_at >= LOG_EVERY:
            self.log(now)
        else:
            at = self.logged_at + LOG_EVERY
            self.flush = loop.call_at(at, self.log, at)

    def log(self, now: float) -> None:
        self.flush = None
        summary = ", ".join(f"{n} {why}" for why, n in self.closed.most_common())
        logger.warning(
            "closed slow or idle connections: %s; %d open, at most %d",
            summary,
            len(self.connections) - self.closing,
            self.limits.max_connections,
        )
        self.closed.clear()
        self.logged_at = now


def _answer(status: bytes, text: bytes, *extra: bytes) -> bytes:
    lines = [
        b"HTTP/1.1 " + status,
        b"content-type: text/plain; charset=utf-8",
        b"content-length: " + str(len(text)).encode(),
        b"x-content-type-options: nosniff",
        b"connection: close",
        *extra,
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + text


TIMED_OUT = _answer(b"408 Request Timeout", b"the request did not arrive in time\n")
NO_ROOM = _answer(
    b"503 Service Unavailable", b"too many connections, try again\n", b"retry-after: 1"
)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with read deadlines and a bound on connections.

    Build one with `guarded_protocol(limits)`: all its connections share `shared`.
    """

    shared: _Shared

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: Phase | None = None
        self._since = 0.0  # when the current header wait or body began
        self._last_byte = 0.0
        self._received = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._dropped = False

    # connection events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        shared = self.shared
        shared.connections = self.connections
        self._enter("headers")
        while len(self.connections) - shared.closing > shared.limits.max_connections:
            victim = shared.oldest_waiting(but=self)
            if victim is None:
                # every other connection is a request being worked on: no one to shed
                self._drop("refused, all busy", NO_ROOM)
                return
            victim._drop("shed to make room", NO_ROOM)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._leave()
        if self._dropped:
            self._dropped = False
            self.shared.closing -= 1

    def data_received(self, data: bytes) -> None:
        if self._phase == "idle":
            # the first bytes of the next request on a kept-alive connection
            self._enter("headers", keep_place=True)
        super().data_received(data)

    def handle_websocket_upgrade(self) -> None:
        self._leave()  # the connection belongs to the websocket protocol from here
        super().handle_websocket_upgrade()

    # parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase != "headers":
            self._enter("headers")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._phase == "headers":
            self._enter("body", keep_place=True)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._received += len(body)
        self._last_byte = self.loop.time()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # answered before its body was read (a 404, a refusal): it waits for the next request
        if self.cycle is not None and self.cycle.response_complete:
            self._enter("idle")
        else:
            self._leave()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._phase is None and not self.transport.is_closing():
            cycle = self.cycle
            if cycle is None or cycle.response_complete:
                self._enter("idle")

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        super()._start_asgi_task(cycle, _quiet_disconnect(app, cycle))

    # deadlines

    def _enter(self, phase: Phase, keep_place: bool = False) -> None:
        now = self.loop.time()
        self._phase = phase
        self._since = self._last_byte = now
        self._received = 0
        if not keep_place:
            self.shared.waiting.pop(self, None)
            self.shared.waiting[self] = None
        self._cancel_timer()
        limits = self.shared.limits
        if phase == "headers":
            self._arm(now + limits.header_timeout)
        elif phase == "body":
            self._arm(now + limits.body_timeout)
        elif self.timeout_keep_alive_task is None and not self.transport.is_closing():
            # idle: uvicorn's keep-alive timer closes it. uvicorn arms it when the response
            # completes, and every later byte of a body the route did not read disarms it.
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def _leave(self) -> None:
        self._phase = None
        self.shared.waiting.pop(self, None)
        self._cancel_timer()

    def _arm(self, due: float) -> None:
        if self._timer is not None and self._timer_at <= due:
            return  # fires earlier and then looks again
        self._cancel_timer()
        self._timer_at = due
        self._timer = self.loop.call_at(due, self._check)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        now = self.loop.time()
        due = self._due(now)
        if due is None:
            return
        if now >= due:
            self._drop(f"{self._phase} timeout", TIMED_OUT)
        else:
            self._arm(due)

    def _due(self, now: float) -> float | None:
        limits = self.shared.limits
        cycle = self.cycle
        if (self.flow is not None and self.flow.read_paused) or (
            self._phase == "body" and cycle is not None and cycle.waiting_for_100_continue
        ):
            # we are the slow side (the app has not read what came, or not yet asked for the
            # body): the client's clock starts again once we read
            self._since = self._last_byte = now
            self._received = 0
        if self._phase == "headers":
            return self._since + limits.header_timeout
        if self._phase == "body":
            due = self._last_byte + limits.body_timeout
            if limits.body_min_rate > 0:
                due = min(
                    due, self._since + limits.body_timeout + self._received / limits.body_min_rate
                )
            return due
        return None

    def _drop(self, reason: str, answer: bytes) -> None:
        phase = self._phase
        self._leave()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        cycle = self.cycle
        if not self._may_answer(phase):
            answer = b""
        if cycle is not None and not cycle.response_complete:
            # the app's receive() answers http.disconnect and its send() is dropped
            cycle.disconnected = True
            cycle.message_event.set()
        if answer:
            transport.write(answer)
        if transport.get_write_buffer_size():
            # a client that does not read its answers must not keep the descriptor either
            transport.abort()
        else:
            transport.close()
        self._dropped = True
        self.shared.closing += 1
        self.shared.count(reason, self.loop)

    def _may_answer(self, phase: Phase | None) -> bool:
        """Whether no response of ours is on the wire, nor a request queued behind one."""
        cycle = self.cycle
        if self.pipeline:
            return False
        if phase == "headers":
            # self.cycle is still the previous request's, if there was one
            return cycle is None or cycle.response_complete
        if phase == "body":
            return cycle is not None and not cycle.response_started
        return False  # idle: closing a kept-alive connection is ordinary HTTP


def _quiet_disconnect(app: Callable[..., Any], cycle: Any) -> Callable[..., Any]:
    """The app, minus the traceback for a body whose client went away (or was timed out).

    Starlette raises ClientDisconnect from `request.body()`; uvicorn would log each one as
    "Exception in ASGI application", thousands of them under a slow-body attack.
    """

    async def run(scope: Any, receive: Any, send: Any) -> None:
        try:
            await app(scope, receive, send)
        except ClientDisconnect:
            if not cycle.disconnected:
                raise

    return run


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for `uvicorn.Config(http=...)`; its connections share one bound."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"shared": _Shared(limits)},
    )
