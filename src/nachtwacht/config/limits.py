"""What one request may carry: body sizes, text lengths and JSON nesting, in one place.

The API models, the dashboard's forms, the CLI and the server's door (`web/bodies.py`) take
their numbers from here, so a text the API refuses is refused by the dashboard and the CLI too.
docs/security.md ("Limits") lists them; the body sizes and depths are the defaults of settings
(`server.max_body_bytes` ...), the text lengths are fixed (they match the store's columns or
what a person writes). Nothing here imports the rest of Nachtwacht: the config schema uses it.
"""

from __future__ import annotations

from typing import Any

KIB = 1024
MIB = 1024 * KIB

# -- request bodies (the defaults of the `server:` settings) ---------------------------------

# forms and JSON: the longest text below (TEXT) fits several times over, even as \u escapes
BODY_BYTES = 64 * KIB
# a post-incident review (four sections of DOCUMENT characters) or an edited notification
DOCUMENT_BYTES = 256 * KIB
# an Alertmanager notification: a whole group of alerts with their labels and annotations
WEBHOOK_BYTES = 1 * MIB

# -- JSON nesting ----------------------------------------------------------------------------

# containers inside containers; real bodies use a handful (an Alertmanager notification 3)
JSON_DEPTH = 32
# an error event: sentry-sdk trims variables to 5 levels below a frame (13 in all) and JS
# SDKs to `normalizeDepth` (3 by default); room for an SDK configured deeper than that
EVENT_DEPTH = 64

# -- text a person writes, in characters ------------------------------------------------------

CONTACT = 64  # a contact or rotation id (String(64) columns)
NAME = 120  # a component, a probe, an actor (String(120) columns)
TITLE = 300  # an incident's, alert's or follow-up's title: one line (String(300))
TEXT = 10_000  # an impact, an update, a note, a reason, a resolution, a comment, a message
DOCUMENT = 20_000  # a section of a post-incident review, an edited notification's body
LABELS = 100  # labels on one alert
LABEL_KEY = 200
LABEL_VALUE = 1_000
RUNBOOK_INPUT = 256  # one runbook input: a host, a unit, an address range
RUNBOOK_INPUTS = 32


def too_long(field: str, limit: int) -> str:
    """The one wording for a text over its limit (pydantic says it its own way for the API)."""
    return f"{field} is longer than {limit} characters"


# -- JSON depth ------------------------------------------------------------------------------

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SAME_KIND = bytes.maketrans(b"{}", b"[]")


def too_deep(raw: bytes, limit: int) -> bool:
    """Whether a JSON text nests containers more than `limit` deep (`{}` is 1 deep).

    Looks at the bytes, not at parsed values: a parser is what a deep text breaks (Python's
    `json` and pydantic recurse), and this costs a few C-level passes whatever the nesting.
    Strings are blanked out, then each pass removes every innermost `[]` pair; a pair left
    after `limit` passes was deeper. Text that is not JSON is for the parser to refuse.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:  # most small bodies, at memchr speed
        return False
    skeleton = _outside_strings(raw).translate(_SAME_KIND, _NOT_BRACKETS)
    if len(skeleton) <= 2 * limit:
        return _depth(skeleton) > limit
    if b"[" * (limit + 1) in skeleton:  # the usual shape of a deep body, found in one scan
        return True
    for _ in range(limit):
        shorter = skeleton.replace(b"[]", b"")
        if not shorter or shorter == skeleton:
            return False
        skeleton = shorter
    return b"[]" in skeleton


def _outside_strings(raw: bytes) -> bytes:
    """`raw` without its strings: brackets inside a string nest nothing."""
    if b"\\" in raw:
        # escaped backslashes first, so that in `\\"` the quote still ends its string
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    # with escaped quotes gone, quotes alternate: opening, closing, opening ...
    return b"".join(raw.split(b'"')[::2])


def _depth(skeleton: bytes) -> int:
    depth = deepest = 0
    for byte in skeleton:
        depth += 1 if byte == 0x5B else -1
        deepest = max(deepest, depth)
    return deepest


def clip_depth(value: Any, limit: int) -> Any:
    """`value` with whatever is nested deeper than `limit` replaced by "…".

    For readers of data stored before the doors checked depth: a reader must not break on it.
    """
    if not isinstance(value, dict | list):
        return value
    if limit <= 0:
        return "…"
    if isinstance(value, dict):
        return {k: clip_depth(v, limit - 1) for k, v in value.items()}
    return [clip_depth(v, limit - 1) for v in value]
