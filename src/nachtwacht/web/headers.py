"""Security headers on every answer, pages and API alike, including `/ack/…` and errors.

Pure ASGI (no BaseHTTPMiddleware): it only adds headers to the response start, so the ingestion
routes pay a few microseconds and streaming is untouched. A route that sets one of these
headers itself keeps its own.
"""

from __future__ import annotations

from typing import Any

HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    # no page of ours is meant to be framed: clickjacking an Acknowledge button is an attack
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    # an acknowledge link carries its token in the path: never hand it on in a Referer
    (b"referrer-policy", b"no-referrer"),
)


class SecurityHeaders:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in HEADERS if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
