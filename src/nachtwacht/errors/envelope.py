"""The wire formats of error ingestion: bodies, Sentry envelopes, auth, and the spool record.

Everything here is pure (bytes in, bytes or an `IngestError` out) so the endpoints stay thin
and the parsing is tested without a server. The limits are applied while decompressing, so a
small compressed bomb cannot take more than the cap of memory.
"""

from __future__ import annotations

import re
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import brotli
import orjson

from nachtwacht.config import limits

EVENT_TYPES = frozenset({"event", "error"})
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


class IngestError(Exception):
    """A request refused: `status` and the message for its JSON body."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field


def too_large(what: str, cap: int) -> IngestError:
    return IngestError(413, f"{what} is larger than {cap} bytes", "body")


# -- bodies ----------------------------------------------------------------------------------


def _inflate(body: bytes, wbits: int, cap: int) -> bytes:
    out: list[bytes] = []
    size = 0
    data = body
    while data:
        d = zlib.decompressobj(wbits)
        chunk = d.decompress(data, cap + 1 - size)
        size += len(chunk)
        out.append(chunk)
        if size > cap or d.unconsumed_tail:
            raise too_large("the decompressed body", cap)
        if not d.eof:
            raise zlib.error("truncated stream")
        # gzip allows several members one after the other; zlib and raw deflate do not
        data = d.unused_data if wbits > zlib.MAX_WBITS else b""
    return b"".join(out)


def _brotli(body: bytes, cap: int) -> bytes:
    d = brotli.Decompressor()
    try:
        out = d.process(body, output_buffer_limit=cap + 1)
    except brotli.error as exc:
        raise IngestError(400, f"the body is not valid brotli: {exc}", "body") from None
    if len(out) > cap:
        raise too_large("the decompressed body", cap)
    if not d.is_finished():
        raise IngestError(400, "the brotli body is truncated", "body")
    return out


def decompress(body: bytes, encoding: str | None, cap: int) -> bytes:
    """The body decoded as `Content-Encoding` says (gzip, deflate, br), at most `cap` bytes."""
    codings = [c.strip().lower() for c in (encoding or "").split(",") if c.strip()]
    for coding in reversed(codings):  # the last one listed was applied last
        if coding in ("identity", ""):
            continue
        if coding in ("gzip", "x-gzip"):
            try:
                body = _inflate(body, 16 + zlib.MAX_WBITS, cap)
            except zlib.error as exc:
                raise IngestError(400, f"the body is not valid gzip: {exc}", "body") from None
        elif coding == "deflate":
            try:  # RFC 9110 deflate is zlib-wrapped, but some clients send raw deflate
                body = _inflate(body, zlib.MAX_WBITS, cap)
            except zlib.error:
                try:
                    body = _inflate(body, -zlib.MAX_WBITS, cap)
                except zlib.error as exc:
                    raise IngestError(
                        400, f"the body is not valid deflate: {exc}", "body"
                    ) from None
        elif coding == "br":
            body = _brotli(body, cap)
        else:
            raise IngestError(415, f"unsupported Content-Encoding '{coding}'", "content-encoding")
    if len(body) > cap:
        raise too_large("the body", cap)
    return body


# -- envelopes -------------------------------------------------------------------------------


@dataclass
class Envelope:
    header: dict[str, Any]
    events: list[bytes] = field(default_factory=list)  # payloads of `event` items
    skipped: int = 0  # items of other types (transaction, session, attachment ...)


def _json_line(line: bytes, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise IngestError(400, f"malformed envelope: {what} is not JSON ({exc})", "body") from None
    if not isinstance(value, dict):
        raise IngestError(400, f"malformed envelope: {what} is not a JSON object", "body")
    return value


def parse_envelope(body: bytes, max_event: int) -> Envelope:
    """Split a Sentry envelope: a header line, then items (a header line and a payload each).

    An item's payload is `length` bytes when its header says so, else the rest of its line.
    Only `event` (and `error`) items are kept; an event over `max_event` bytes is a 413.
    """
    end = len(body)
    nl = body.find(b"\n")
    first = body[: nl if nl >= 0 else end]
    if not first.strip():
        raise IngestError(400, "malformed envelope: the header line is empty", "body")
    envelope = Envelope(_json_line(first, "the envelope header"))
    pos = nl + 1 if nl >= 0 else end
    while pos < end:
        nl = body.find(b"\n", pos)
        line_end = nl if nl >= 0 else end
        line = body[pos:line_end]
        pos = line_end + 1
        if not line.strip():
            continue  # blank lines between items
        header = _json_line(line, "an item header")
        kind = header.get("type")
        if not isinstance(kind, str) or not kind:
            raise IngestError(400, "malformed envelope: an item header has no type", "body")
        length = header.get("length")
        if length is not None:
            if not isinstance(length, int) or isinstance(length, bool) or length < 0:
                raise IngestError(400, "malformed envelope: an item length is invalid", "body")
            if pos + length > end:
                raise IngestError(400, "malformed envelope: an item is cut short", "body")
            payload = body[pos : pos + length]
            pos += length
            if pos < end and body[pos : pos + 1] == b"\n":
                pos += 1
        else:
            nl = body.find(b"\n", pos) if pos < end else -1
            payload_end = nl if nl >= 0 else end
            payload = body[min(pos, end) : payload_end]
            pos = payload_end + 1
        if kind in EVENT_TYPES:
            if len(payload) > max_event:
                raise too_large("an event", max_event)
            envelope.events.append(payload)
        else:
            envelope.skipped += 1
    return envelope


# -- events ----------------------------------------------------------------------------------


def new_event_id() -> str:
    return uuid.uuid4().hex


def clean_event_id(value: Any) -> str | None:
    """32 lowercase hex digits (Sentry also sends UUIDs with dashes); None when unusable."""
    if not isinstance(value, str):
        return None
    text = value.replace("-", "").lower()
    return text if _HEX32.match(text) else None


def load_event(
    payload: bytes, fallback_id: str | None = None, max_depth: int = limits.EVENT_DEPTH
) -> tuple[str, bytes, dict[str, Any]]:
    """(event_id, the event's JSON, the event) with an event_id always present (given, or a
    new one); the JSON is the payload itself unless the event_id had to be set.

    An event nested deeper than `max_depth` is refused: stored, it broke the issue page."""
    if limits.too_deep(payload, max_depth):
        raise IngestError(400, f"the event is nested deeper than {max_depth} levels", "body")
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise IngestError(400, f"the event is not JSON ({exc})", "body") from None
    if not isinstance(event, dict):
        raise IngestError(400, "the event is not a JSON object", "body")
    given = event.get("event_id")
    event_id = clean_event_id(given) if given is not None else None
    if given is not None and event_id is None:
        raise IngestError(400, "event_id must be 32 hex digits (or a UUID)", "event_id")
    if event_id is None:
        event_id = clean_event_id(fallback_id) or new_event_id()
    if given != event_id:
        event["event_id"] = event_id
        payload = orjson.dumps(event)
    return event_id, payload, event


def record(project_id: int, received_at: float, event_json: bytes) -> bytes:
    """The spool record `error_event` (see errors/models.py), without re-encoding the event."""
    head = b'{"project_id":%d,"received_at":%s,"event":' % (project_id, repr(received_at).encode())
    return head + event_json + b"}"


# -- auth ------------------------------------------------------------------------------------


def parse_auth_header(value: str | None) -> str | None:
    """`sentry_key` from `X-Sentry-Auth: Sentry sentry_key=..., sentry_version=7`."""
    if not value:
        return None
    text = value.strip()
    if text[:7].lower() == "sentry ":
        text = text[7:]
    for part in text.split(","):
        name, _, item = part.strip().partition("=")
        if name.strip() == "sentry_key":
            return item.strip() or None
    return None


def dsn_parts(dsn: Any) -> tuple[str | None, str | None]:
    """(public key, project id) of a DSN `http://KEY@host/ID`."""
    if not isinstance(dsn, str) or not dsn:
        return None, None
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return None, None
    project = parts.path.rstrip("/").rsplit("/", 1)[-1] or None
    return parts.username or None, project
