"""The spool record `error_event`: how the endpoints write it and the drainer reads it.

The format is the one errors/models.py describes, `{"project_id", "received_at", "event"}`,
which every producer (the Sentry and JSON endpoints, the Frappe poller) may write. The
endpoints, which have just parsed the event anyway, add two keys so that the drainer need not
parse it a second time:

    {"project_id":1,"received_at":1.8e9,"event_len":N,"event":{...N bytes...},"meta":{...}}

`event_len` (written before `event`) says where the event's JSON ends, so the drainer reads
the small head and `meta` (the event's time, level, environment, release, server, transaction,
message and fingerprints) and keeps the event's bytes as they are for `data_json`. It is still
one JSON object with the documented keys; a record without them (or with fingerprints of
other versions than this build's) is read the slow way, by parsing the whole event.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from nachtwacht.errors import fingerprint
from nachtwacht.errors import normalize as n
from nachtwacht.errors.envelope import clean_event_id

_HEAD = re.compile(rb'^\{"project_id":(\d+),"received_at":([0-9.eE+-]+),"event_len":(\d+),"event":')
_META = b',"meta":'


def event_meta(event: dict[str, Any], received_at: float) -> dict[str, Any]:
    """What the store needs of an event besides its JSON: computed once, where it is parsed."""
    message = n.event_message(event)
    found, _ = fingerprint.hashes(event)
    return {
        "event_id": event.get("event_id"),
        "ts": n.timestamp(event, received_at),
        "level": n.level(event),
        "environment": n.field(event, "environment", 64),
        "release": n.field(event, "release", 200),
        "server_name": n.field(event, "server_name", 200),
        "transaction": n.field(event, "transaction", 300),
        "message": message[:8000] if message else None,
        "fp": [[version, digest] for version, digest in found],
    }


def build(
    project_id: int, received_at: float, event_json: bytes, meta: dict[str, Any] | None = None
) -> bytes:
    """An `error_event` record around the event's JSON as received (not re-encoded)."""
    if meta is None:
        head = b'{"project_id":%d,"received_at":%s,"event":' % (
            project_id, repr(received_at).encode(),
        )  # fmt: skip
        return head + event_json + b"}"
    head = b'{"project_id":%d,"received_at":%s,"event_len":%d,"event":' % (
        project_id, repr(float(received_at)).encode(), len(event_json),
    )  # fmt: skip
    return head + event_json + _META + orjson.dumps(meta) + b"}"


@dataclass
class Item:
    """One event of a batch, as the handler works with it."""

    project_id: int
    event_id: str
    received_at: float
    meta: dict[str, Any]
    raw: bytes | None = None  # the event's JSON as received, when the record carried it
    parsed: dict[str, Any] | None = None
    issue: str = ""  # the fingerprint of the issue it joins
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ts(self) -> float:
        return float(self.meta["ts"])

    def event(self) -> dict[str, Any]:
        if self.parsed is None:
            self.parsed = orjson.loads(self.raw or b"{}")
        return self.parsed


def _versions_match(meta: dict[str, Any]) -> bool:
    fps = meta.get("fp")
    if not isinstance(fps, list):
        return False
    return sorted(v for v, _ in fps) == sorted(fingerprint.ALGORITHMS)


def _fast(record: bytes) -> Item | None:
    head = _HEAD.match(record)
    if head is None:
        return None
    start = head.end()
    end = start + int(head[3])
    if record[end : end + len(_META)] != _META or not record.endswith(b"}"):
        return None
    meta = orjson.loads(record[end + len(_META) : -1])
    raw = record[start:end]
    if not isinstance(meta, dict) or not _versions_match(meta):
        return None
    event_id = clean_event_id(meta.get("event_id"))
    if event_id is None:
        return None
    return Item(int(head[1]), event_id, float(head[2]), meta, raw=raw)


def _slow(record: bytes, now: float) -> Item:
    rec = orjson.loads(record)
    event = rec.get("event") if isinstance(rec, dict) else None
    project_id = rec.get("project_id") if isinstance(rec, dict) else None
    if not isinstance(event, dict) or not isinstance(project_id, int):
        raise ValueError("an error_event record needs project_id (int) and event (object)")
    received = rec.get("received_at")
    received_at = float(received) if isinstance(received, int | float) and received else now
    event_id = clean_event_id(event.get("event_id"))
    if event_id is None:
        # deterministic, so a replay of the same record deduplicates
        event_id = hashlib.sha256(record).hexdigest()[:32]
    event["event_id"] = event_id
    meta = event_meta(event, received_at)
    return Item(project_id, event_id, received_at, meta, parsed=event)


def parse(payloads: list[bytes], now: float) -> list[Item]:
    """Decode a batch; repeats of a (project, event_id) within it are dropped."""
    items: list[Item] = []
    seen: set[tuple[int, str]] = set()
    for record in payloads:
        item = _fast(record) or _slow(record, now)
        key = (item.project_id, item.event_id)
        if key in seen:
            continue
        seen.add(key)
        items.append(item)
    return items
