"""The outgoing HTTP client of the low-rate senders: pages, the dead man's switch, the checklist.

aiohttp already carries the probes (ADR 3); this thin wrapper gives the few modules that send
a request now and then (notify channels, the watchdog, the checklist) one small surface, so
the runtime needs no second HTTP library (ADR 22). It answers a `Response` with the body
read (up to `MAX_BODY`), and turns every failure into one of three errors: `HttpTimeout`,
`BadUrl` (retrying cannot help) and `TransportError` (refused, reset, DNS, TLS).

`HttpClient(app=...)` sends to an ASGI app in-process instead of over the network: the
checklist, run by the server itself, asks that very app.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

if TYPE_CHECKING:
    import aiohttp

# the senders read an answer to learn whether it was taken; a receiver cannot make us hold more
MAX_BODY = 1 << 20


class HttpError(Exception):
    """Any failure to get an answer."""


class HttpTimeout(HttpError):
    pass


class BadUrl(HttpError):
    """The URL cannot be sent to (no host, not http/https): retrying cannot help."""


class TransportError(HttpError):
    """Refused, reset, DNS, TLS: the next try may pass."""


class Headers(dict[str, str]):
    """Response headers, looked up case-insensitively (all keys are stored lower-case)."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


@dataclass
class Response:
    status_code: int
    headers: Headers
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)


def _headers(pairs: Any) -> Headers:
    out = Headers()
    for key, value in pairs:
        k = key.decode("latin-1") if isinstance(key, bytes) else str(key)
        v = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        out[k.lower()] = v
    return out


def with_params(url: str, params: Mapping[str, Any] | None) -> str:
    if not params:
        return url
    return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"


class HttpClient:
    def __init__(
        self,
        *,
        base_url: str = "",
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        follow_redirects: bool = False,
        verify: bool = True,
        app: Any = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.follow_redirects = follow_redirects
        self.verify = verify
        self.app = app
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def get(self, url: str, **kwargs: Any) -> Response:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> Response:
        return await self.request("POST", url, **kwargs)

    async def request(
        self,
        method: str,
        url: str,
        *,
        timeout: float | None = None,
        json: Any = None,
        content: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        # a path joins the base URL's path (`https://host/nw` + `/login`), as httpx does
        joined = self.base_url + url if self.base_url and url.startswith("/") else url
        full = with_params(joined, params)
        sent = {**self.headers, **(headers or {})}
        if json is not None:
            content = jsonlib.dumps(json).encode("utf-8")
            sent = {"Content-Type": "application/json", **sent}
        wait = self.timeout if timeout is None else timeout
        if self.app is not None:
            return await _asgi(self.app, method, full, sent, content or b"", wait)
        parts = urlsplit(full)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadUrl(f"cannot send to {full!r}: an http:// or https:// URL with a host")
        return await self._network(method, full, sent, content, wait)

    async def _network(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None, wait: float
    ) -> Response:
        import asyncio

        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.verify),
                trust_env=False,
            )
        try:
            async with asyncio.timeout(wait):
                async with self._session.request(
                    method,
                    url,
                    data=body,
                    headers=headers,
                    allow_redirects=self.follow_redirects,
                ) as answer:
                    content = await _read_up_to(answer.content, MAX_BODY)
                    return Response(answer.status, _headers(answer.headers.items()), content)
        except TimeoutError:
            raise HttpTimeout(f"no answer within {wait:g}s") from None
        except aiohttp.InvalidURL as exc:
            raise BadUrl(f"invalid URL: {exc}") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise TransportError(f"certificate: {exc.certificate_error}") from None
        except aiohttp.ClientConnectorError as exc:
            raise TransportError(_connect_failure(exc.host, exc.port, exc.os_error)) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TransportError(str(exc) or exc.__class__.__name__) from None


async def _read_up_to(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to `limit` bytes. `StreamReader.read(n)` answers what has arrived so far
    (one chunk, often 64 KiB), not n bytes: a larger body came back cut."""
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = await stream.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _connect_failure(host: str, port: int | None, error: OSError) -> str:
    import errno

    where = f"{host}:{port}" if port else host
    if isinstance(error, ConnectionRefusedError) or error.errno == errno.ECONNREFUSED:
        return f"connection refused by {where}"
    return f"connection to {where} failed: {error.strerror or error}"


async def _asgi(
    app: Any, method: str, url: str, headers: dict[str, str], body: bytes, wait: float
) -> Response:
    """One request to an ASGI app in this process (no lifespan, no network)."""
    import asyncio

    parts = urlsplit(url)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": parts.scheme or "http",
        "path": parts.path or "/",
        "raw_path": (parts.path or "/").encode(),
        "query_string": parts.query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"host", (parts.netloc or "nachtwacht.local").encode())],
        "client": ("127.0.0.1", 0),
        "server": (parts.hostname or "nachtwacht.local", parts.port or 80),
    }
    sent_body = False
    status = 500
    got_headers = Headers()
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the app waits for a disconnect that never comes
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, got_headers
        if message["type"] == "http.response.start":
            status = int(message["status"])
            got_headers = _headers(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))

    try:
        async with asyncio.timeout(wait):
            await app(scope, receive, send)
    except TimeoutError:
        raise HttpTimeout(f"no answer within {wait:g}s") from None
    return Response(status, got_headers, b"".join(chunks)[:MAX_BODY])
