"""Tail the sources, parse, detect, record: one `poll` per engine tick.

Decisions:

- Each source is followed by `nachtwacht.tailer` (rotation, copytruncate, partial lines, a
  file that goes away), at most `MAX_BYTES_PER_POLL` a source a poll, so a backlog is caught
  up over several polls. One `Detector` serves every source: sshd's failures and Frappe's
  login endpoint count towards one address.
- The findings of a poll, and the sweep's cleared ones, go through the alert pipeline in the
  transaction that stores every source's position (`engine_meta`, key `security.<name>`), so
  an alert is not lost between a line being read and it being recorded. A failed commit
  closes the tailers: the next poll rereads from the stored positions (the detector may count
  those lines twice; its dedup keeps that to one alert).
- The detector's windows are in memory: after a restart they start empty, so a burst that
  spans the restart is counted from the restart on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from nachtwacht.alerts.service import Outcome
from nachtwacht.clock import Clock
from nachtwacht.config.schema import Settings
from nachtwacht.security import service
from nachtwacht.security.detectors import Detector
from nachtwacht.security.models import Finding, Source, Thresholds
from nachtwacht.security.parsers import CombinedParser, JsonParser, SshdParser
from nachtwacht.store.db import Store, meta_key
from nachtwacht.tailer import Position, Tailer

MAX_BYTES_PER_POLL = 20 * 1024 * 1024
PREFIX = "security."

Parser = CombinedParser | JsonParser | SshdParser


def parser_for(kind: str, clock: Clock, timezone: str = "UTC") -> Parser:
    if kind == "nginx":
        return CombinedParser()
    if kind == "nginx_json":
        return JsonParser()
    if kind == "sshd":
        return SshdParser(clock, ZoneInfo(timezone))
    raise ValueError(f"unknown security source kind '{kind}'")


@dataclass
class Polled:
    findings: list[Finding] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # a source that cannot be read, and why

    @property
    def queued(self) -> int:
        return sum(o.queued for o in self.outcomes)


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
        self.detector = Detector(clock, thresholds)
        self.parsers = {s.name: parser_for(s.kind, clock, s.timezone) for s in self.sources}
        self._tailers: dict[str, Tailer] | None = None
        self._committed: dict[str, dict[str, Any]] = {}  # the positions in the store

    def close(self) -> None:
        for tailer in (self._tailers or {}).values():
            tailer.close()
        self._tailers = None

    def _open(self) -> dict[str, Tailer]:
        with self.store.connect() as conn:
            stored = {
                s.name: self.store.get_meta(conn, meta_key(PREFIX, s.name)) for s in self.sources
            }
        self._committed = {name: value for name, value in stored.items() if value is not None}
        saved = {name: Position.load(value) for name, value in stored.items()}
        return {
            s.name: Tailer(
                s.path, label=f"{s.kind} log", from_start=s.from_start, resume=saved[s.name]
            )
            for s in self.sources
        }

    def poll(self) -> Polled:
        if self._tailers is None:
            self._tailers = self._open()
        polled = Polled()
        feed = self.detector.feed
        for source in self.sources:
            tailer, parse = self._tailers[source.name], self.parsers[source.name].parse
            blobs: list[bytes] = []
            read = tailer.read(blobs.append, MAX_BYTES_PER_POLL)
            if read.error is not None:
                polled.errors.append(read.error)
            for blob in blobs:
                for line in blob.decode("utf-8", "replace").split("\n"):
                    if not line:
                        continue
                    event = parse(line.rstrip("\r"))
                    if event is not None:
                        polled.findings += feed(event)
        polled.findings += self.detector.sweep()
        positions = {s.name: self._tailers[s.name].position().dump() for s in self.sources}
        if not polled.findings and positions == self._committed:
            return polled
        now = self.clock.now()
        try:
            with self.store.begin() as conn:
                polled.outcomes = service.record(conn, self.settings, polled.findings, now)
                for name, position in positions.items():
                    if position != self._committed.get(name):
                        self.store.set_meta(conn, meta_key(PREFIX, name), position, now)
        except BaseException:
            self.close()  # the next poll rereads from what was committed
            raise
        self._committed = positions
        return polled
