"""Poll a Frappe site's Error Log over its REST API and spool each new row as an `error_event`.

One `ErrorLogPoller` per `errors.frappe_error_logs` entry; `frappe.engine.install` runs its
`tick` every `interval`. A poll:

1. lists `name, creation` of the rows created at or after `since` (oldest first, keyset
   pagination: the next page starts at the last creation of the previous one; a page that is
   wholly one instant is stepped over with `limit_start`), skipping names already taken;
2. fetches the full rows of the new names (`name in [...]`, 25 at a time), turns each into a
   Sentry event (`pytrace.parse` reads the traceback text into an exception chain with
   frames, the same as for a traceback sent to the JSON endpoint, so grouping works as for
   events from sentry-sdk), and appends them to the spool;
3. only then advances the cursor in engine_meta (`frappe.errorlog.<entry name>`).

The cursor is the newest `creation` taken plus the names taken within `lookback` of it.
`since` is that creation minus `lookback`: Frappe sets `creation` when a row is built, and a
row can become visible after newer ones (deferred inserts are written by a job minutes later;
on PostgreSQL a long transaction commits late), so re-listing a window and skipping known
names catches those late rows without taking any row twice. `creation` is in the site's time
zone without an offset; around a DST fall-back `since` reaches back over the repeated hour.
If more than `MAX_SEEN` names fall within the window (an error storm), the oldest are dropped
and a `floor` keeps the window from reaching below them: a storm narrows the lookback rather
than growing the cursor past what a TEXT column holds.

The event id is uuid5(site URL + Error Log name), so a row spooled twice (a crash between the
spool write and the cursor write) is stored once: `(project_id, event_id)` is unique.

Why one module of some 430 lines: the cursor, the poll that advances it and the event built
from a row are one protocol (what is listed, fetched, spooled and then remembered); split, each
part would only make sense read beside the others.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import orjson
import yarl
from sqlalchemy import select

from nachtwacht.errors import pytrace
from nachtwacht.errors.models import FrappeErrorLog
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store, meta_key

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

FIELDS = ["name", "creation", "method", "error", "reference_doctype", "reference_name"]
ORDER = "creation asc, name asc"
FETCH_CHUNK = 25  # full rows per request: tracebacks with variables run to tens of KB each
MAX_NEW_PER_TICK = 5000  # the rest of a backlog waits for the next tick
MAX_SEEN = 1000  # names kept in the cursor (MariaDB's TEXT holds 64 KiB)
MAX_TEXT = 16_000  # characters of a non-traceback error text kept in the event
CREATION_FMT = "%Y-%m-%d %H:%M:%S.%f"
_TAGS = re.compile(r"<[^>]+>")

SpoolPut = Callable[[str, bytes], Awaitable[None]]


class FrappeError(Exception):
    """The site answered something the poller cannot use; the message says what."""


class FrappeAuthError(FrappeError):
    """401/403: the key is wrong or its user may not read Error Log."""


class FrappeUnavailable(FrappeError):
    """5xx, a timeout or a connection failure: retried at the next interval."""


def event_id(site: str, name: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{site}/app/error-log/{name}").hex


def parse_creation(value: Any, zone: ZoneInfo) -> datetime | None:
    """Frappe's `creation` ("2026-11-27 09:12:33.123456", site-local) as a naive datetime."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(zone).replace(tzinfo=None)
    return parsed


def to_epoch(local: datetime, zone: ZoneInfo) -> float:
    # fold=0: an hour repeated at a DST fall-back reads as its first occurrence
    return local.replace(tzinfo=zone).timestamp()


def query_since(newest: datetime, lookback: float, now: float, zone: ZoneInfo) -> datetime:
    """The lowest site-local `creation` a row made at or after `newest - lookback` can have.

    Usually `newest - lookback`; when the clocks fell back in between, local time repeated an
    hour, and `local(now) - (now - t0)` reaches back over it.
    """
    t0 = to_epoch(newest, zone) - lookback
    local_now = datetime.fromtimestamp(now, zone).replace(tzinfo=None)
    return min(
        newest - timedelta(seconds=lookback),
        local_now - timedelta(seconds=max(0.0, now - t0)),
    )


@dataclass
class Cursor:
    site: str
    newest: datetime | None = None
    floor: datetime | None = None  # rows created before it are done (set in a storm)
    seen: dict[str, datetime] = field(default_factory=dict)  # name -> creation

    def since(self, cfg: FrappeErrorLog, now: float, zone: ZoneInfo) -> datetime:
        if self.newest is None:
            start = datetime.fromtimestamp(now - cfg.backfill, zone).replace(tzinfo=None)
        else:
            start = query_since(self.newest, cfg.lookback, now, zone)
        return max(start, self.floor) if self.floor is not None else start

    def take(self, name: str, creation: datetime) -> None:
        self.seen[name] = creation
        if self.newest is None or creation > self.newest:
            self.newest = creation

    def prune(self, since: datetime) -> None:
        """Forget names the window no longer reaches; cap them at MAX_SEEN (newest kept)."""
        self.seen = {n: c for n, c in self.seen.items() if c >= since}
        if len(self.seen) <= MAX_SEEN:
            return
        cut = sorted(self.seen.values(), reverse=True)[MAX_SEEN - 1]
        # all names at the cut instant stay, so the floor skips none of them
        self.seen = {n: c for n, c in self.seen.items() if c >= cut}
        self.floor = cut

    def dump(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "newest": _fmt(self.newest),
            "floor": _fmt(self.floor),
            "seen": [[n, _fmt(c)] for n, c in self.seen.items()],
        }

    @classmethod
    def load(cls, value: Any, site: str) -> Cursor:
        """The saved cursor; a fresh one when absent, unreadable or for another site URL."""
        if not isinstance(value, dict) or value.get("site") != site:
            return cls(site)
        try:
            seen = {str(n): datetime.fromisoformat(c) for n, c in value.get("seen", [])}
            newest = value.get("newest")
            floor = value.get("floor")
            return cls(
                site,
                datetime.fromisoformat(newest) if newest else None,
                datetime.fromisoformat(floor) if floor else None,
                seen,
            )
        except (TypeError, ValueError):
            return cls(site)


def _fmt(value: datetime | None) -> str | None:
    return None if value is None else value.strftime(CREATION_FMT)


class ErrorLogPoller:
    def __init__(
        self,
        cfg: FrappeErrorLog,
        store: Store,
        spool_put: SpoolPut,
        session: Callable[[], aiohttp.ClientSession],
        default_zone: str,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.spool_put = spool_put
        self.session = session
        self.zone = ZoneInfo(cfg.site_timezone or default_zone)
        self.site = str(cfg.url).rstrip("/")
        self.meta_key = meta_key("frappe.errorlog.", cfg.name)
        self.cursor: Cursor | None = None
        self.unsaved = False  # the cursor moved but the store did not take it yet
        self.spooled = 0  # events appended since start

    # -- one poll ----------------------------------------------------------------------------

    async def tick(self, now: float) -> int:
        """Spool the Error Logs not taken yet; return how many."""
        project_id = await asyncio.to_thread(self._project_id)
        if self.cursor is None:
            self.cursor = await asyncio.to_thread(self._load_cursor)
        elif self.unsaved:
            await asyncio.to_thread(self._save_cursor, now)
        cursor = self.cursor
        since = cursor.since(self.cfg, now, self.zone)
        new = await self._list_new(cursor, since)
        for i in range(0, len(new), FETCH_CHUNK):
            chunk = new[i : i + FETCH_CHUNK]
            rows = await self._fetch([name for name, _ in chunk])
            payloads = [
                orjson.dumps(
                    {
                        "project_id": project_id,
                        "received_at": now,
                        "event": build_event(rows[name], self.site, self.cfg, self.zone),
                    }
                )
                for name, _ in chunk
                if name in rows  # deleted since it was listed: nothing to take
            ]
            # durable first (fsync'd, one group commit for the chunk), then the cursor
            await asyncio.gather(*(self.spool_put("error_event", p) for p in payloads))
            self.spooled += len(payloads)
            for name, creation in chunk:
                cursor.take(name, creation)
            cursor.prune(since)
            await asyncio.to_thread(self._save_cursor, now)
        return len(new)

    async def _list_new(self, cursor: Cursor, since: datetime) -> list[tuple[str, datetime]]:
        """Names created at or after `since` and not taken yet, oldest first."""
        page = self.cfg.page_size
        found: dict[str, datetime] = {}
        bound, start = since, 0
        while len(found) < MAX_NEW_PER_TICK:
            rows = await self._get(
                {
                    "fields": ["name", "creation"],
                    "filters": [["creation", ">=", _fmt(bound)]],
                    "order_by": ORDER,
                    "limit_start": start,
                    "limit_page_length": page,
                }
            )
            last: datetime | None = None
            for row in rows:
                name = row.get("name")
                creation = parse_creation(row.get("creation"), self.zone)
                if not isinstance(name, str) or creation is None:
                    raise FrappeError(
                        f"{self.site}: an Error Log row without a readable name/creation: {row!r}"
                    )
                last = creation
                if name not in cursor.seen and name not in found:
                    found[name] = creation
            if len(rows) < page or last is None:
                break
            if last == bound:
                start += page  # a whole page created at one instant: step over it
            else:
                bound, start = last, 0
        return sorted(found.items(), key=lambda item: (item[1], item[0]))

    async def _fetch(self, names: list[str]) -> dict[str, dict[str, Any]]:
        rows = await self._get(
            {
                "fields": FIELDS,
                "filters": [["name", "in", names]],
                "order_by": ORDER,
                "limit_page_length": len(names),
            }
        )
        return {row["name"]: row for row in rows if isinstance(row.get("name"), str)}

    # -- HTTP ----------------------------------------------------------------------------------

    async def _get(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        import aiohttp

        url = yarl.URL(self.site) / "api" / "resource" / "Error Log"
        query = {
            k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in params.items()
        }
        headers = {
            "Authorization": f"token {self.cfg.api_key}:{self.cfg.api_secret}",
            "Accept": "application/json",
        }
        try:
            async with self.session().get(
                url,
                params=query,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.cfg.timeout),
            ) as resp:
                status, body = resp.status, await resp.read()
                ctype = resp.headers.get("Content-Type", "")
        except TimeoutError:
            raise FrappeUnavailable(
                f"{self.site}: no answer within {self.cfg.timeout:g}s; "
                "retrying at the next interval"
            ) from None
        except aiohttp.ClientError as exc:
            raise FrappeUnavailable(
                f"{self.site}: {exc.__class__.__name__}: {exc}; retrying at the next interval"
            ) from None
        if status == 401:
            raise FrappeAuthError(
                f"{self.site} refused the API key (HTTP 401{_detail(body)}): check api_key and "
                "api_secret (User > Settings > API Access > Generate Keys)"
            )
        if status == 403:
            raise FrappeAuthError(
                f"{self.site}: the API user may not read Error Log (HTTP 403{_detail(body)}): "
                "give that user the System Manager role"
            )
        if status >= 500:
            raise FrappeUnavailable(
                f"{self.site}: HTTP {status}{_detail(body)}; retrying at the next interval"
            )
        if status != 200:
            raise FrappeError(
                f"{self.site}: HTTP {status} from /api/resource/Error Log{_detail(body)}"
            )
        try:
            data = orjson.loads(body)["data"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise FrappeError(
                f"{self.site}: /api/resource/Error Log answered {ctype or 'no content type'}, "
                "not Frappe's JSON: is `url` the site's root?"
            ) from None
        if not isinstance(data, list):
            raise FrappeError(f"{self.site}: `data` is not a list in the Error Log answer")
        return [row for row in data if isinstance(row, dict)]

    # -- store -----------------------------------------------------------------------------

    def _project_id(self) -> int:
        p = t.error_projects
        with self.store.connect() as conn:
            row = conn.execute(
                select(p.c.id, p.c.disabled).where(p.c.name == self.cfg.project)
            ).first()
        if row is None:
            raise LookupError(
                f"frappe_error_logs '{self.cfg.name}': no project '{self.cfg.project}'; "
                f"create it with `nachtwacht project add {self.cfg.project}`"
            )
        if row.disabled:
            raise LookupError(
                f"frappe_error_logs '{self.cfg.name}': project '{self.cfg.project}' is "
                "disabled; not polling"
            )
        return int(row.id)

    def _load_cursor(self) -> Cursor:
        with self.store.connect() as conn:
            return Cursor.load(self.store.get_meta(conn, self.meta_key), self.site)

    def _save_cursor(self, now: float) -> None:
        assert self.cursor is not None
        # what is spooled stays taken even if this fails: the next tick saves it first, and
        # a restart before that re-spools a few rows, which their event ids deduplicate
        self.unsaved = True
        with self.store.begin() as conn:
            self.store.set_meta(conn, self.meta_key, self.cursor.dump(), now)
        self.unsaved = False


def _detail(body: bytes) -> str:
    """Frappe's reason from an error answer: `exc_type` and the first server message."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(data, dict):
        return ""
    parts: list[str] = []
    if isinstance(data.get("exc_type"), str):
        parts.append(data["exc_type"])
    try:
        messages = orjson.loads(data.get("_server_messages") or "[]")
        first = orjson.loads(messages[0]) if messages else None
        if isinstance(first, dict) and isinstance(first.get("message"), str):
            parts.append(_TAGS.sub("", first["message"])[:200])
    except (orjson.JSONDecodeError, TypeError, IndexError):
        pass
    return f": {' - '.join(parts)}" if parts else ""


def build_event(
    row: dict[str, Any], site: str, cfg: FrappeErrorLog, zone: ZoneInfo
) -> dict[str, Any]:
    """A Sentry event from one Error Log row (the traceback parsed into exception frames)."""
    name = str(row["name"])
    title = (row.get("method") or "").strip() if isinstance(row.get("method"), str) else ""
    error = row.get("error")
    text = error if isinstance(error, str) else ""
    created = parse_creation(row.get("creation"), zone)
    host = yarl.URL(site).host or site
    tags = {"frappe.site": host, "frappe.error_log": name}
    extra: dict[str, Any] = {
        "frappe_error_log": name,
        "link": str(yarl.URL(site) / "app" / "error-log" / name),
    }
    for key in ("reference_doctype", "reference_name"):
        if isinstance(row.get(key), str) and row[key]:
            tags[f"frappe.{key}"] = row[key][:200]
    event: dict[str, Any] = {
        "event_id": event_id(site, name),
        "platform": "python",
        "level": "error",
        "logger": "frappe.error_log",
        "environment": cfg.environment,
        "server_name": host,
        "tags": tags,
        "extra": extra,
    }
    if created is not None:
        event["timestamp"] = to_epoch(created, zone)
    chain = pytrace.parse(text)
    if chain:
        event["exception"] = {"values": chain}
        if title:
            event["transaction"] = title[:200]
            extra["title"] = title
    else:
        # `frappe.log_error(title, message)` without an exception: the title is the stable
        # part to group on, the message (often a remote API's answer) goes along as data
        event["message"] = title or text.strip()[:MAX_TEXT] or f"Error Log {name}"
        if title and text.strip():
            extra["error"] = text.strip()[:MAX_TEXT]
    return event
