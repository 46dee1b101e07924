"""Security headers on every answer, pages and API alike, including `/ack/…` and errors.

Pure ASGI (no BaseHTTPMiddleware): it only adds headers to the response start, so the ingestion
routes pay a few microseconds and streaming is untouched. A route that sets one of these
headers itself keeps its own.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

# The dashboard vendors its scripts and styles and keeps none inline (no <script> blocks, no
# on…= handlers, no style attributes or <style> elements), so nothing but our own files runs:
# text that slips past the escaping cannot become a script. htmx is told not to inject its
# indicator <style> nor to eval (base.html).
CSP_DIRECTIVES: dict[str, str] = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",  # data: for the empty favicon
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    # no page of ours is meant to be framed: clickjacking an Acknowledge button is an attack
    "frame-ancestors": "'none'",
    "connect-src": "'self'",
}
_STYLE = re.compile(r"<style>(.*?)</style>", re.S)


def policy(directives: dict[str, str] | None = None) -> str:
    return "; ".join(f"{k} {v}" for k, v in (directives or CSP_DIRECTIVES).items())


def policy_for_inline_styles(html: str) -> str:
    """The policy, allowing exactly the <style> blocks of this document by their hashes: for
    the review document, which must open from a file, offline, with its styles inside it."""
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(css.encode()).digest()).decode() + "'"
        for css in _STYLE.findall(html)
    ]
    return policy(CSP_DIRECTIVES | {"style-src": " ".join(["'self'", *hashes])})


HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", policy().encode()),
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
