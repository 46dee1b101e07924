"""Grouping events into issues: a versioned fingerprint.

Version 1 takes, in this order, the first of these that the event has:

1. the client's `fingerprint` (a list of strings; `{{ default }}` in it stands for the
   default grouping below, so a client can split a default group further);
2. the stack frames of its exceptions: for each exception of the chain its type, then its
   in-app frames (all frames when the SDK marked none in-app) as module, function and the
   context line with whitespace collapsed; consecutive repeats (recursion) count once;
3. the type of the raised exception and its value, normalised (numbers, ids, hex, quoted
   values, emails and IPs replaced by placeholders);
4. the normalised message.

The fingerprint is sha256 over the version and those parts, so two versions never produce the
same fingerprint. Each issue stores the version that created it. A new event is fingerprinted
with every version in `ALGORITHMS`; it joins the issue of the oldest version that matches one,
and when none does a new issue is made with the current version. So when a version 2 comes,
events keep landing in the issues version 1 made, and only errors never seen before are
grouped the new way: existing issues never regroup. A version can leave `ALGORITHMS` once no
issue of it is still receiving events.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from nachtwacht.errors.normalize import (
    Event,
    Frame,
    category,
    culprit,
    exc_type,
    exc_value,
    exceptions,
    frame_function,
    frame_module,
    frames_of,
    in_app_frames,
    message_of,
    normalize_text,
    title,
)

FINGERPRINT_VERSION = 1
MAX_FRAMES = 50  # innermost in-app frames per exception that take part
DEFAULT_MARK = re.compile(r"^\{\{\s*default\s*\}\}$")
_HASHY = re.compile(r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b")
_SPACES = re.compile(r"\s+")
_SITE = re.compile(r"^.*/(?:site|dist)-packages/")

Components = tuple[str, list[str]]  # (kind, parts)
FRAME_CACHE = 50_000  # frame keys kept; a few MB at most
_FRAME_KEYS: dict[tuple[object, ...], str] = {}


@dataclass(frozen=True)
class Grouping:
    """What the store needs to file an event: its fingerprints and the issue's labels."""

    hashes: tuple[tuple[int, str], ...]  # (version, sha256 hex), the current version first
    kind: str  # client | frames | exception | message | empty
    title: str
    culprit: str | None
    exc_type: str | None
    category: str

    @property
    def current(self) -> tuple[int, str]:
        return self.hashes[0]


def _module_key(frame: Frame) -> str:
    module = _SITE.sub("", frame_module(frame))
    # build hashes in file names (app.3f2a9b1c.js) change with every deploy
    return _HASHY.sub("<hex>", module)


def frame_key(frame: Frame) -> str:
    """`module|function|context` of a frame, cached: the same frames come again and again."""
    try:
        cache_key = (
            frame.get("module"),
            frame.get("filename"),
            frame.get("abs_path"),
            frame.get("function"),
            frame.get("context_line"),
            frame.get("lineno"),
        )
        return _FRAME_KEYS[cache_key]
    except KeyError:
        pass
    except TypeError:  # an unhashable value from an odd client: no caching
        return _frame_key(frame)
    if len(_FRAME_KEYS) > FRAME_CACHE:
        _FRAME_KEYS.clear()
    key = _FRAME_KEYS[cache_key] = _frame_key(frame)
    return key


def _frame_key(frame: Frame) -> str:
    context = frame.get("context_line")
    line = _SPACES.sub(" ", context).strip()[:200] if isinstance(context, str) else ""
    function = frame_function(frame)
    if not line and function == "?":
        # nothing but a position: the line number is all that tells frames apart
        line = f"@{frame.get('lineno')}"
    return f"{_module_key(frame)}|{function}|{line}"


def _frame_parts(frames: list[Frame]) -> list[str]:
    keys: list[str] = []
    for frame in in_app_frames(frames)[-MAX_FRAMES:]:
        key = frame_key(frame)
        if not keys or keys[-1] != key:
            keys.append(key)
    return keys


def _default_v1(event: Event) -> Components:
    chain = exceptions(event)
    parts: list[str] = []
    for exc in chain:
        frames = frames_of(exc)
        if frames:
            parts.append(f"type:{exc_type(exc) or ''}")
            parts += _frame_parts(frames)
    if parts:
        return "frames", parts
    if chain:
        main = chain[-1]
        return "exception", [exc_type(main) or "", normalize_text(exc_value(main))]
    text = message_of(event)
    if text:
        return "message", [normalize_text(text)]
    return "empty", [normalize_text(title(event))]


def _components_v1(event: Event) -> Components:
    client = event.get("fingerprint")
    if isinstance(client, list) and client:
        parts: list[str] = []
        for item in client[:50]:
            text = item if isinstance(item, str) else str(item)
            if DEFAULT_MARK.match(text.strip()):
                kind, default = _default_v1(event)
                parts += [f"default:{kind}", *default]
            else:
                parts.append(text[:500])
        return "client", parts
    return _default_v1(event)


# version -> the grouping components it takes; keep every version some issue still uses
ALGORITHMS: dict[int, Callable[[Event], Components]] = {1: _components_v1}


def digest(version: int, kind: str, parts: list[str]) -> str:
    text = "\x1f".join([f"v{version}", kind, *parts])
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


def hashes(event: Event) -> tuple[list[tuple[int, str]], str]:
    """The event's fingerprint for every version (newest first) and the current one's kind."""
    out: list[tuple[int, str]] = []
    kind = "empty"
    for version in sorted(ALGORITHMS, reverse=True):
        v_kind, parts = ALGORITHMS[version](event)
        if version == FINGERPRINT_VERSION:
            kind = v_kind
        out.append((version, digest(version, v_kind, parts)))
    return out, kind


def labels(event: Event) -> tuple[str, str | None, str | None, str]:
    """(title, culprit, exception type, category) of the issue an event starts."""
    chain = exceptions(event)
    main = chain[-1] if chain else None
    kind_name = exc_type(main) if main is not None else None
    text = exc_value(main) if main is not None else message_of(event)
    return title(event), culprit(event), kind_name, category(kind_name, text)


def group(event: Event) -> Grouping:
    """The event's fingerprints (newest version first) and the labels of its issue."""
    found, kind = hashes(event)
    name, where, kind_name, cat = labels(event)
    return Grouping(
        hashes=tuple(found), kind=kind, title=name, culprit=where, exc_type=kind_name, category=cat
    )
