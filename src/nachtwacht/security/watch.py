"""Tail the sources, parse, detect, record: one `poll` per engine tick.

Decisions:

- Each log file is followed by `nachtwacht.tailer` (rotation, copytruncate, partial lines, a
  file that goes away), at most `max_bytes_per_poll` a source a poll, so a backlog is caught
  up over several polls. A Frappe site's `tabActivity Log` is read over SQL after a cursor
  (creation, name), at most `MAX_ROWS_PER_POLL` rows a poll; the journal through journalctl
  after journald's cursor (`security.journal`), as many entries. One `Detector` serves every
  source: sshd's failures and Frappe's login failures count towards one address.
- The findings of a poll, the sweep's cleared ones, and the poll's daily tallies go through
  the alert pipeline / into `security_tallies` in the transaction that stores every source's
  position (`engine_meta`, key `security.<name>`: a file's position, an Activity Log
  cursor or a journal cursor), so an alert or a count is not lost between a line being read
  and it being recorded. A failed commit closes the tailers: the next poll rereads from the stored
  positions (the detector may count those lines twice; the tallies of the failed poll were
  never written). The failed poll's findings are carried into the next poll: the detector
  already holds their keys as firing (or cleared), so the reread lines would not make them
  again, and the alert (or its resolution) would be lost.
- A poll that could not read everything there is (`Polled.behind`: bytes or rows left for
  the next poll) says so; the engine module shows it in /healthz rather than skip lines.
- The detector's windows are in memory: after a restart they start empty, so a burst that
  spans a restart is counted from the restart on. Admins' known networks are in the store
  (tallies of kind `admin_network`), read when the watch starts.
- A likely compromise that opened or joined an incident gets the security runbook attached
  there (`security.compromise`), in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from nachtwacht.alerts.service import Outcome
from nachtwacht.analytics.security import log_path as own_log
from nachtwacht.clock import Clock
from nachtwacht.config.schema import Settings
from nachtwacht.security import autoblock, compromise, service, tallies
from nachtwacht.security.detectors import Detector
from nachtwacht.security.journal import Journal
from nachtwacht.security.models import NEW_NETWORK, Event, Finding, Source, Thresholds
from nachtwacht.security.parsers import (
    CombinedParser,
    JsonParser,
    NachtwachtParser,
    SshdParser,
    frappe_login,
)
from nachtwacht.store.db import Store, meta_key
from nachtwacht.tailer import Position, Tailer

MAX_BYTES_PER_POLL = 20 * 1024 * 1024
MAX_ROWS_PER_POLL = 5000
PREFIX = "security."
# read after a cursor rather than tailed as a file
CURSOR_KINDS = frozenset(("frappe_activity", "journal"))

Parser = CombinedParser | JsonParser | SshdParser | NachtwachtParser


def parser_for(kind: str, clock: Clock, timezone: str = "UTC") -> Parser:
    if kind == "nginx":
        return CombinedParser()
    if kind == "nginx_json":
        return JsonParser()
    if kind == "sshd":
        return SshdParser(clock, ZoneInfo(timezone))
    if kind == "nachtwacht":
        return NachtwachtParser()
    raise ValueError(f"unknown security source kind '{kind}'")


@dataclass
class Polled:
    findings: list[Finding] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # a source that cannot be read, and why
    behind: dict[str, str] = field(default_factory=dict)  # source → what is left unread
    tallied: int = 0  # tally rows written
    runbooks: list[int] = field(default_factory=list)  # runbook runs attached to incidents
    blocks: list[int] = field(default_factory=list)  # pending blocks findings asked for

    @property
    def queued(self) -> int:
        return sum(o.queued for o in self.outcomes)


# Frappe's Activity Log: login rows after the cursor, oldest first. `creation` has
# microseconds in Frappe's schema (datetime(6)); the name breaks ties within one.
ACTIVITY_QUERY = text(
    "SELECT name, creation, user, ip_address, status FROM `tabActivity Log` "
    "WHERE operation = 'Login' AND status IN ('Success', 'Failed') "
    "AND (creation > :c OR (creation = :c AND name > :n)) "
    "ORDER BY creation, name LIMIT :limit"
)
ACTIVITY_END = text(
    "SELECT creation, name FROM `tabActivity Log` ORDER BY creation DESC, name DESC LIMIT 1"
)
EPOCH = "1970-01-01 00:00:00"


class ActivityLog:
    """A Frappe site's `tabActivity Log`, read after a cursor {creation, name}."""

    def __init__(self, source: Source, cursor: dict[str, Any] | None) -> None:
        self.source = source
        self.cursor = cursor
        self.tz = ZoneInfo(source.timezone)
        self._engine: Engine | None = None

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _connect(self) -> Engine:
        if self._engine is None:
            # NullPool: one short connection a poll, none held between polls
            self._engine = create_engine(
                self.source.url,
                poolclass=NullPool,
                connect_args={"connect_timeout": 10, "read_timeout": 30},
            )
        return self._engine

    def read(self, events: list[Event], limit: int) -> tuple[str | None, bool]:
        """Append the new login rows' events; (error, more rows left than `limit`)."""
        label = f"frappe_activity {self.source.name}"
        try:
            with self._connect().connect() as conn:
                if self.cursor is None:
                    if self.source.from_start:
                        self.cursor = {"creation": EPOCH, "name": ""}
                    else:  # first sight: from the newest row on, as a file from its end
                        last = conn.execute(ACTIVITY_END).first()
                        self.cursor = {
                            "creation": str(last[0]) if last else EPOCH,
                            "name": str(last[1]) if last else "",
                        }
                        return None, False
                rows = conn.execute(
                    ACTIVITY_QUERY,
                    {"c": self.cursor["creation"], "n": self.cursor["name"], "limit": limit},
                ).all()
        except SQLAlchemyError as exc:
            self.close()
            reason = getattr(exc, "orig", None) or exc
            return f"{label}: cannot read tabActivity Log: {str(reason)[:300]}", False
        for name, creation, user, ip_address, status in rows:
            try:
                event = frappe_login(creation, user, ip_address, status, self.tz)
            except ValueError:
                event = None
            if event is not None:
                events.append(event)
            moment = creation if isinstance(creation, datetime) else None
            self.cursor = {
                "creation": moment.isoformat(sep=" ") if moment else str(creation),
                "name": str(name),
            }
        return None, len(rows) >= limit


class Watch:
    """Every source into one detector; not thread-safe (one poll at a time)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        clock: Clock,
        sources: Sequence[Source],
        thresholds: Thresholds | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.sources = list(sources)
        self.detector = Detector(clock, thresholds or settings.security.thresholds())
        self.detector.logins_elsewhere = any(s.kind == "frappe_activity" for s in self.sources)
        self.parsers = {
            s.name: parser_for(s.kind, clock, s.timezone)
            for s in self.sources
            if s.kind not in CURSOR_KINDS
        }
        self.max_bytes = settings.security.max_bytes_per_poll
        self.max_rows = MAX_ROWS_PER_POLL
        self._tailers: dict[str, Tailer] | None = None
        self._tables: dict[str, ActivityLog | Journal] = {}
        self._committed: dict[str, dict[str, Any]] = {}  # the positions in the store
        self._tallies = tallies.Writer()
        # findings of a poll whose commit failed: the detector will not make them again
        self._unrecorded: list[Finding] = []

    def close(self) -> None:
        for tailer in (self._tailers or {}).values():
            tailer.close()
        for table in self._tables.values():
            table.close()
        self._tailers = None
        self._tables = {}

    def _open(self) -> dict[str, Tailer]:
        rule = self.detector.thresholds.rules.get(NEW_NETWORK)
        with self.store.connect() as conn:
            stored = {
                s.name: self.store.get_meta(conn, meta_key(PREFIX, s.name)) for s in self.sources
            }
            if rule is not None and self.detector.thresholds.admins:
                since = self.clock.now() - rule.window
                networks, seen = tallies.known_networks(conn, since)
                for account, known in networks.items():
                    mine = self.detector.networks.setdefault(account, {})
                    for network, last in known.items():
                        mine[network] = max(mine.get(network, 0.0), last)
                self.detector.seen |= seen
        self._committed = {name: value for name, value in stored.items() if value is not None}
        self._tables = {
            s.name: (
                ActivityLog(s, stored[s.name])
                if s.kind == "frappe_activity"
                else Journal(s, stored[s.name], self.max_bytes)
            )
            for s in self.sources
            if s.kind in CURSOR_KINDS
        }
        return {
            s.name: Tailer(
                s.path or str(own_log(self.settings)),
                label=f"{s.kind} log",
                from_start=s.from_start,
                resume=Position.load(stored[s.name]),
            )
            for s in self.sources
            if s.kind not in CURSOR_KINDS
        }

    def _positions(self) -> dict[str, dict[str, Any]]:
        assert self._tailers is not None
        positions = {name: tailer.position().dump() for name, tailer in self._tailers.items()}
        for name, table in self._tables.items():
            if table.cursor is not None:
                positions[name] = dict(table.cursor)
        return positions

    def poll(self) -> Polled:
        if self._tailers is None:
            self._tailers = self._open()
        polled = Polled()
        polled.findings = list(self._unrecorded)
        feed = self.detector.feed
        for source in self.sources:
            if source.kind in CURSOR_KINDS:
                events: list[Event] = []
                error, more = self._tables[source.name].read(events, self.max_rows)
                if error is not None:
                    polled.errors.append(error)
                if more:
                    what = "entries" if source.kind == "journal" else "rows"
                    polled.behind[source.name] = f"more than {self.max_rows} {what}"
                for event in events:
                    polled.findings += feed(event)
                continue
            tailer, parse = self._tailers[source.name], self.parsers[source.name].parse
            blobs: list[bytes] = []
            read = tailer.read(blobs.append, self.max_bytes)
            if read.error is not None:
                polled.errors.append(read.error)
            if read.behind:
                polled.behind[source.name] = f"{read.behind} bytes"
            for blob in blobs:
                for line in blob.decode("utf-8", "replace").split("\n"):
                    if not line:
                        continue
                    parsed = parse(line.rstrip("\r"))
                    if parsed is not None:
                        polled.findings += feed(parsed)
        polled.findings += self.detector.sweep()
        counts = self.detector.tally.take()
        positions = self._positions()
        if not polled.findings and not counts and positions == self._committed:
            return polled
        now = self.clock.now()
        try:
            with self.store.begin() as conn:
                polled.outcomes = service.record(conn, self.settings, polled.findings, now)
                polled.runbooks = compromise.attach_runbooks(
                    conn, self.settings, polled.findings, polled.outcomes, now
                )
                polled.blocks = autoblock.request_blocks(
                    conn, self.settings, polled.findings, polled.outcomes, now
                )
                polled.tallied = self._tallies.write(conn, counts)
                for name, position in positions.items():
                    if position != self._committed.get(name):
                        self.store.set_meta(conn, meta_key(PREFIX, name), position, now)
        except BaseException:
            self._tallies.forget()
            self._unrecorded = polled.findings
            self.close()  # the next poll rereads from what was committed
            raise
        self._unrecorded = []
        self._committed = positions
        return polled
