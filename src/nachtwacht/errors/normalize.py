"""Reading a Sentry event: its exceptions, frames, message, time, title, culprit and category.

Events come from many SDKs and from our own adapters, so every accessor here is defensive: a
field of the wrong type reads as missing rather than raising (a raise in the drainer would
send the record to `dead/` instead of the store).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

Event = dict[str, Any]
Frame = dict[str, Any]

# one pass replaces every variable part of a message with a placeholder; the order of the
# alternatives matters (a UUID is also hex and numbers, an email holds a host name)
_VARIABLE = re.compile(
    r"(?P<uuid>\b[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\b)"
    r"|(?P<email>\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b)"
    r"|(?P<ip>\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b|\b(?:[0-9a-fA-F]{1,4}:){3,7}[0-9a-fA-F]{1,4}\b)"
    r"|(?P<hex>\b0[xX][0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b)"
    r"|(?P<quoted>'[^'\n]{0,200}'|\"[^\"\n]{0,200}\"|`[^`\n]{0,200}`)"
    r"|(?P<number>[-+]?\d+(?:[.,]\d+)*)"
)
_PLACEHOLDER = {
    "uuid": "<uuid>",
    "email": "<email>",
    "ip": "<ip>",
    "hex": "<hex>",
    "quoted": "<str>",
    "number": "<n>",
}
_SPACES = re.compile(r"\s+")
# memory addresses in reprs (`<Foo object at 0x7f...>`) are covered by hex; so are ids in paths


def _placeholder(match: re.Match[str]) -> str:
    return _PLACEHOLDER[match.lastgroup or "number"]


def normalize_text(text: str, limit: int = 500) -> str:
    """A message with its variable parts (numbers, ids, hex, quoted values, emails, IPs) replaced.

    `"User 42 'bob' not found at 10.0.0.1"` -> `"User <n> <str> not found at <ip>"`.
    """
    text = _SPACES.sub(" ", text[: limit * 4]).strip()
    return _VARIABLE.sub(_placeholder, text)[:limit]


# -- accessors -------------------------------------------------------------------------------


def _str(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        if isinstance(value, int | float | bool):
            value = str(value)
        else:
            return None
    value = value.strip()
    return value[:limit] if value else None


def exceptions(event: Event) -> list[dict[str, Any]]:
    """The exception chain, oldest first (the last is the one raised), as dicts."""
    exc = event.get("exception")
    if isinstance(exc, dict):
        values = exc.get("values")
    elif isinstance(exc, list):
        values = exc
    else:
        values = None
    if not isinstance(values, list):
        return []
    return [v for v in values if isinstance(v, dict)]


def frames_of(exc: dict[str, Any]) -> list[Frame]:
    """The frames of one exception, outermost first (as Sentry sends them)."""
    trace = exc.get("stacktrace")
    if not isinstance(trace, dict):
        return []
    frames = trace.get("frames")
    if not isinstance(frames, list):
        return []
    return [f for f in frames if isinstance(f, dict)]


def message_of(event: Event) -> str | None:
    """The log message: `logentry.formatted` / `logentry.message`, or `message`."""
    for key in ("logentry", "message"):
        value = event.get(key)
        if isinstance(value, dict):
            text = _str(value.get("formatted"), 8000) or _str(value.get("message"), 8000)
        else:
            text = _str(value, 8000)
        if text:
            return text
    return None


def exc_type(exc: dict[str, Any]) -> str | None:
    return _str(exc.get("type"), 200)


def exc_value(exc: dict[str, Any]) -> str:
    return _str(exc.get("value"), 8000) or ""


def in_app_frames(frames: list[Frame]) -> list[Frame]:
    """The frames marked in-app, or all of them when the SDK marked none."""
    marked = [f for f in frames if f.get("in_app") is True]
    return marked or frames


def frame_module(frame: Frame) -> str:
    for key in ("module", "filename", "abs_path", "package"):
        value = frame.get(key)
        if isinstance(value, str) and value:
            return value[:200]
    return "?"


def frame_function(frame: Frame) -> str:
    value = frame.get("function")
    return value[:200] if isinstance(value, str) and value else "?"


def culprit(event: Event) -> str | None:
    """Where it happened: the innermost in-app frame as "module in function"."""
    chain = exceptions(event)
    for exc in reversed(chain):
        frames = in_app_frames(frames_of(exc))
        if frames:
            frame = frames[-1]
            return f"{frame_module(frame)} in {frame_function(frame)}"[:300]
    return _str(event.get("transaction"), 300) or _str(event.get("culprit"), 300)


def _synthetic(exc: dict[str, Any], message: str | None) -> bool:
    """An exception an SDK made up to carry a message's stack trace, not one that was raised.

    `@sentry/node`'s `captureMessage` (with `attachStacktrace`) sends one with no type, the
    message as its value and `mechanism.synthetic`; Sentry titles such an event by the message.
    """
    if exc_type(exc):
        return False
    mechanism = exc.get("mechanism")
    if isinstance(mechanism, dict) and mechanism.get("synthetic") is True:
        return True
    return message is not None and exc_value(exc) == message


def title(event: Event) -> str:
    """Like Sentry: "TypeError: the value" for an exception, else the message's first line."""
    chain = exceptions(event)
    text = message_of(event)
    if chain and not _synthetic(chain[-1], text):
        main = chain[-1]
        kind = exc_type(main) or "Error"
        value = exc_value(main).split("\n", 1)[0].strip()
        return (f"{kind}: {value}" if value else kind)[:300]
    if not text and chain:
        text = exc_value(chain[-1]) or None
    if text:
        return text.split("\n", 1)[0].strip()[:300] or "<no message>"
    return "<unlabeled event>"


def event_message(event: Event) -> str | None:
    """What the events table keeps as `message`: the log message, else "Type: value"."""
    text = message_of(event)
    if text:
        return text
    chain = exceptions(event)
    if chain:
        main = chain[-1]
        value = exc_value(main)
        kind = exc_type(main) or "Error"
        return f"{kind}: {value}" if value else kind
    return None


LEVELS = ("fatal", "error", "warning", "info", "debug")


def level(event: Event) -> str:
    value = event.get("level")
    if isinstance(value, str) and value.lower() in LEVELS:
        return value.lower()
    if value == "critical":
        return "fatal"
    return "error"


def timestamp(event: Event, received_at: float) -> float:
    """When it happened: the event's `timestamp` (epoch or RFC 3339), never in the future.

    A client clock running ahead would otherwise put events into hours that have not come yet;
    a missing or unreadable timestamp means "when we received it".
    """
    value = event.get("timestamp")
    ts: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        ts = float(value)
    elif isinstance(value, str):
        try:
            ts = float(value)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                parsed = None
            if parsed is not None:
                if parsed.tzinfo is None:  # Sentry's naive timestamps are UTC
                    parsed = parsed.replace(tzinfo=UTC)
                ts = parsed.timestamp()
    if ts is None or ts != ts or ts <= 0 or ts > received_at:
        return received_at
    return ts


def tags(event: Event) -> dict[str, str]:
    """Tags as a dict: SDKs send either {"k": "v"} or [["k", "v"], ...]."""
    raw = event.get("tags")
    out: dict[str, str] = {}
    if isinstance(raw, dict):
        items = list(raw.items())
    elif isinstance(raw, list):
        items = [tuple(p) for p in raw if isinstance(p, list | tuple) and len(p) == 2]
    else:
        items = []
    for key, value in items[:100]:
        if isinstance(key, str) and value is not None:
            out[key[:64]] = str(value)[:200]
    return out


def field(event: Event, key: str, limit: int) -> str | None:
    return _str(event.get(key), limit)


# -- categories ------------------------------------------------------------------------------

# first match wins, so the more specific kinds come first: a "lock wait timeout" is a timeout,
# a "connection refused" from a database driver is a network problem of the database
_CATEGORIES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("memory", re.compile(r"memoryerror|out of memory|cannot allocate memory|\boom\b", re.I)),
    ("import", re.compile(r"importerror|modulenotfound|no module named|cannot import", re.I)),
    (
        "permission",
        re.compile(
            r"permission|forbidden|unauthori[sz]ed|access denied|not permitted|"
            r"not allowed|csrf|authentication",
            re.I,
        ),
    ),
    ("timeout", re.compile(r"timeout|timed out|deadline exceeded", re.I)),
    (
        "database",
        re.compile(
            r"operationalerror|integrityerror|programmingerror|databaseerror|dataerror|"
            r"deadlock|\bsql|mysql|mariadb|postgres|psycopg|pymysql|sqlite|"
            r"duplicate entry|unique constraint|foreign key|lock wait|querydeadlock",
            re.I,
        ),
    ),
    (
        "network",
        re.compile(
            r"connection(?:error|refused|reset|aborted)?|connectionrefused|brokenpipe|"
            r"name or service not known|getaddrinfo|dns|ssl|unreachable|socket|"
            r"httperror|requestexception|max retries",
            re.I,
        ),
    ),
    (
        "validation",
        re.compile(
            r"validation|valueerror|invalid|mandatory|required field|"
            r"linkvalidation|doesnotexist|not found|unprocessable",
            re.I,
        ),
    ),
)


def category(exc_kind: str | None, text: str | None) -> str:
    """database, network, timeout, permission, validation, import, memory or other."""
    haystack = f"{exc_kind or ''} {(text or '')[:500]}"
    for name, pattern in _CATEGORIES:
        if pattern.search(haystack):
            return name
    return "other"
