"""`logfile`: how many lines of a log file matched a regex within a recent window.

Example: `path: /var/log/nginx/access.log`, `pattern: '" 5\\d\\d '`, `window: 5m`, `critical: 20`
-> "7 lines matching '\" 5\\d\\d ' in the last 5m".

Decisions:

- Thresholds apply to the number of matching lines in the last `window` (op ">" by default).
  Without `warn`/`critical` any match is critical (`critical: 0`, or 1 with op ">="): a probe
  that watches for a pattern and never alerts would be a silent trap. Giving either limit
  replaces the default; with op "<"/"<=" there is no default.
- The file is followed by `nachtwacht.tailer` (rename rotation, copytruncate, partial lines,
  a file that goes away and comes back; its docstring has the rules): each check reads the
  bytes appended since the last one, at most 50 MB (a huge backlog is caught up over several
  checks instead of blocking; the message says how much is left), and counts the complete
  lines that match. Each check adds (now, matches) to a deque; the value is the sum over the
  window.
- `from_start: false` (default): the first time the probe sees a file it starts at its end
  (and skips the rest of a line it lands in), so history is not counted. A file that did not
  exist at first sight, a rotated-in file and a truncated file are read from the start.
- With a store, the tailer's position (dev, inode, offset of the last complete line, and of
  any rotated file still being read) and the window's counts are kept in engine_meta under
  `logfile.offset.<probe name>`, so a restart resumes where it left off, neither recounting
  nor forgetting; a file rotated while we were down is finished first.
- A missing file is CRITICAL "log file /x not found": a log that is not being written usually
  means the service or its logging is broken, or the path is wrong, which an operator must fix
  either way; UNKNOWN would hide it. Unreadable (permissions, a directory) is CRITICAL too.
- File IO runs in a thread (`asyncio.to_thread`), one check at a time per probe: if a previous
  read is still running (a slow disk after a timeout), the check is UNKNOWN rather than queued.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from nachtwacht.durations import Duration, format_duration
from nachtwacht.probes.base import Probe, ThresholdConfig
from nachtwacht.probes.results import CheckResult
from nachtwacht.store.db import StoreError, meta_key
from nachtwacht.tailer import Position, Tailer

if TYPE_CHECKING:
    from nachtwacht.probes.context import ProbeContext

log = logging.getLogger(__name__)

MAX_BYTES_PER_CHECK = 50 * 1024 * 1024
MAX_SAVED_COUNTS = 1000


class Config(ThresholdConfig):
    kind: Literal["logfile"]
    path: str = Field(min_length=1)
    pattern: str = Field(min_length=1)
    window: Duration = 300.0
    from_start: bool = False

    @model_validator(mode="before")
    @classmethod
    def _default_limit(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        op = data.get("op", ">")
        if data.get("warn") is None and data.get("critical") is None and op in (">", ">="):
            return {**data, "critical": 0 if op == ">" else 1}
        return data

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not os.path.isabs(value):
            raise ValueError(
                f"path must be absolute (e.g. /var/log/nginx/error.log), not '{value}'"
            )
        return value

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            where = f" at position {exc.pos}" if exc.pos is not None else ""
            raise ValueError(
                f"pattern '{value}' is not a valid Python regular expression: {exc.msg}{where}"
            ) from None
        return value

    @model_validator(mode="after")
    def _window(self) -> Config:
        if self.window < 1:
            raise ValueError("window must be at least 1s")
        return self


def count_matches(data: bytes, regex: re.Pattern[str]) -> int:
    """Lines of `data` (newline-separated, no trailing newline) in which `regex` finds a match."""
    text = data.decode("utf-8", "replace")
    search = regex.search
    lines = text.split("\n")
    if "\r" in text:  # CRLF logs: let `$` match at the end of the line
        return sum(1 for line in lines if search(line.rstrip("\r")))
    return sum(1 for line in lines if search(line))


@dataclass(slots=True)
class _Outcome:
    total: int
    error: str | None = None
    behind: int = 0
    busy: bool = False


class ProbeImpl(Probe):
    config: Config

    def __init__(self, config: Config, ctx: ProbeContext) -> None:
        super().__init__(config, ctx)
        self._regex = re.compile(config.pattern)
        self._lock = threading.Lock()
        self._tailer: Tailer | None = None  # made at the first check, from the saved position
        self._counts: deque[tuple[float, int]] = deque()  # (check time, matches), non-zero only
        self._persisted: Position | None = None
        self._key = meta_key("logfile.offset.", config.name)

    async def check(self) -> CheckResult:
        cfg = self.config
        now = self.ctx.clock.now()
        outcome = await asyncio.to_thread(self._poll, now)
        if outcome.busy:
            return CheckResult.unknown(f"the previous read of {cfg.path} is still running")
        total = outcome.total
        if outcome.error is not None:
            return CheckResult.critical(outcome.error, total)
        status = cfg.judge(total)
        pattern = cfg.pattern if len(cfg.pattern) <= 60 else cfg.pattern[:57] + "..."
        message = (
            f"{total} line{'' if total == 1 else 's'} matching '{pattern}' "
            f"in the last {format_duration(cfg.window)}{cfg.describe(status)}"
        )
        if outcome.behind:
            message += f"; catching up, {outcome.behind / 1e6:.0f} MB not read yet"
        return CheckResult(status, message, total)

    async def close(self) -> None:
        await asyncio.to_thread(self._close_files)

    # -- in a worker thread ---------------------------------------------------------------

    def _poll(self, now: float) -> _Outcome:
        if not self._lock.acquire(blocking=False):
            return _Outcome(0, busy=True)
        try:
            tailer = self._tailer
            if tailer is None:
                tailer = self._tailer = Tailer(
                    self.config.path,
                    label="log file",
                    from_start=self.config.from_start,
                    resume=self._load_saved(now),
                )
            matches = 0
            regex = self._regex

            def count(lines: bytes) -> None:
                nonlocal matches
                matches += count_matches(lines, regex)

            read = tailer.read(count, MAX_BYTES_PER_CHECK)
            if matches:
                self._counts.append((now, matches))
            cutoff = now - self.config.window
            while self._counts and self._counts[0][0] <= cutoff:
                self._counts.popleft()
            self._persist(now, tailer.position(), changed=matches > 0)
            return _Outcome(sum(n for _, n in self._counts), read.error, read.behind)
        finally:
            self._lock.release()

    def _load_saved(self, now: float) -> Position | None:
        store = self.ctx.store
        if store is None:
            return None
        try:
            with store.connect() as conn:
                value = store.get_meta(conn, self._key)
        except StoreError as exc:
            log.warning("logfile %s: cannot read its saved offset: %s", self.config.name, exc)
            return None
        saved = Position.load(value)
        try:
            counts = [(float(ts), int(n)) for ts, n in value.get("counts", [])]
        except (AttributeError, TypeError, ValueError):
            saved = None
        if saved is None or saved == Position():
            return None  # absent or from an incompatible version: start afresh
        self._persisted = saved
        cutoff = now - self.config.window
        self._counts.extend((ts, n) for ts, n in sorted(counts) if ts > cutoff and n > 0)
        return saved

    def _persist(self, now: float, position: Position, changed: bool) -> None:
        store = self.ctx.store
        if store is None or position == Position():
            return
        if position == self._persisted and not changed:
            return
        value = {
            **position.dump(),
            "counts": [list(c) for c in list(self._counts)[-MAX_SAVED_COUNTS:]],
        }
        try:
            with store.begin() as conn:
                store.set_meta(conn, self._key, value, now)
        except StoreError as exc:  # counting goes on; a restart may recount a little
            log.warning("logfile %s: cannot save its offset: %s", self.config.name, exc)
            return
        self._persisted = position

    def _close_files(self) -> None:
        locked = self._lock.acquire(timeout=5)
        try:
            if self._tailer is not None:
                self._tailer.close()
            self._tailer = None
        finally:
            if locked:
                self._lock.release()
