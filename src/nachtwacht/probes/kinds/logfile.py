"""`logfile`: how many lines of a log file matched a regex within a recent window.

Example: `path: /var/log/nginx/access.log`, `pattern: '" 5\\d\\d '`, `window: 5m`, `critical: 20`
-> "7 lines matching '\" 5\\d\\d ' in the last 5m".

Decisions:

- Thresholds apply to the number of matching lines in the last `window` (op ">" by default).
  Without `warn`/`critical` any match is critical (`critical: 0`, or 1 with op ">="): a probe
  that watches for a pattern and never alerts would be a silent trap. Giving either limit
  replaces the default; with op "<"/"<=" there is no default.
- The file is tailed: the probe keeps it open with its inode and offset, each check reads only
  the bytes appended since the last one (at most 50 MB per check, so a huge backlog is caught
  up over several checks instead of blocking; the message says how much is left) and counts
  complete lines; a partial last line waits for its end. Each check adds (now, matches) to a
  deque; the value is the sum over the window.
- `from_start: false` (default): the first time the probe sees a file it starts at its end, so
  history is not counted. A file that did not exist at first sight, a rotated-in file and a
  truncated file are read from the start: all of their content is new.
- Rename rotation (logrotate's default, `create`): when the path names another inode, the old
  handle is read to its end before the new file, and it is kept open until a later check finds
  nothing more in it, because the writer (nginx before its USR1 reopen) may still append to it.
  Copytruncate: the same inode shorter than our offset restarts at 0. (A copytruncate followed
  by more writes than we had read before the next check is indistinguishable from growth; that
  is copytruncate's known limit, and why rename rotation is better.)
- With a store, (dev, inode, offset of the last complete line) and the window's counts are kept
  in engine_meta under `logfile.offset.<probe name>`, so a restart resumes where it left off,
  neither recounting nor forgetting. If the file was rotated while we were down, the rotated file
  (same directory, name starting with the log's name, same inode) is finished first.
- A missing file is CRITICAL "log file /x not found": a log that is not being written usually
  means the service or its logging is broken, or the path is wrong, which an operator must fix
  either way; UNKNOWN would hide it. Unreadable (permissions, a directory) is CRITICAL too.
- File IO runs in a thread (`asyncio.to_thread`), one check at a time per probe: if a previous
  read is still running (a slow disk after a timeout), the check is UNKNOWN rather than queued.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import re
import stat
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from nachtwacht.durations import Duration, format_duration
from nachtwacht.probes.base import Probe, ThresholdConfig, os_reason
from nachtwacht.probes.results import CheckResult
from nachtwacht.store.db import StoreError

if TYPE_CHECKING:
    from nachtwacht.probes.context import ProbeContext

log = logging.getLogger(__name__)

MAX_BYTES_PER_CHECK = 50 * 1024 * 1024
CHUNK_BYTES = 1024 * 1024
MAX_LINE_BYTES = 1024 * 1024  # a longer "line" (a binary file) is cut, not buffered forever
MAX_SAVED_COUNTS = 1000
_META_KEY_LEN = 120  # the width of engine_meta.key


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


class _Tail:
    """One open log file: where we are in it and the line not yet finished."""

    def __init__(self, file: io.FileIO, dev: int, inode: int, offset: int, skip: bool) -> None:
        self.file = file
        self.dev = dev
        self.inode = inode
        self.offset = offset  # next byte to read
        self.line_start = offset  # where the unfinished line begins: the resume point
        self.partial = b""
        # we started in the middle of a line: its tail is not a line of its own
        self.skip = skip

    def read(self, budget: int, regex: re.Pattern[str]) -> tuple[int, int, bool]:
        """Read up to `budget` bytes; (matching complete lines, bytes read, reached EOF)."""
        matches = used = 0
        while used < budget:
            chunk = self.file.read(min(CHUNK_BYTES, budget - used))
            if not chunk:
                return matches, used, True
            used += len(chunk)
            self.offset += len(chunk)
            matches += self._feed(chunk, regex)
        return matches, used, False

    def _feed(self, chunk: bytes, regex: re.Pattern[str]) -> int:
        last_nl = chunk.rfind(b"\n")
        if last_nl >= 0:
            self.line_start = self.offset - (len(chunk) - last_nl - 1)
        data = self.partial + chunk if self.partial else chunk
        if self.skip:
            first_nl = data.find(b"\n")
            if first_nl < 0:
                self.partial = b""
                return 0
            data = data[first_nl + 1 :]
            self.skip = False
        cut = data.rfind(b"\n")
        if cut < 0:
            self.partial = data[:MAX_LINE_BYTES]
            return 0
        self.partial = data[cut + 1 : cut + 1 + MAX_LINE_BYTES]
        return count_matches(data[:cut], regex)

    def restart(self) -> None:
        """The file was truncated in place (copytruncate): everything in it now is new."""
        self.file.seek(0)
        self.offset = self.line_start = 0
        self.partial = b""
        self.skip = False

    def finish(self, regex: re.Pattern[str]) -> int:
        """Close; the writer has moved on, so an unterminated last line is a line."""
        tail, self.partial = self.partial, b""
        self.file.close()
        if tail and not self.skip:
            return count_matches(tail, regex)
        return 0

    def remaining(self) -> int:
        try:
            return max(0, os.fstat(self.file.fileno()).st_size - self.offset)
        except OSError:
            return 0


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
        self._tail: _Tail | None = None
        self._old: _Tail | None = None  # the rotated-away file, until it stops growing
        self._old_checks = 0
        self._fresh = True  # no sight of the file yet: the first one decides where to start
        self._loaded = False
        self._saved: dict[str, Any] | None = None
        self._counts: deque[tuple[float, int]] = deque()  # (check time, matches), non-zero only
        self._persisted: tuple[int, int, int] | None = None
        self._key = _meta_key("logfile.offset.", config.name)

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
            if not self._loaded:
                self._load_saved(now)
            matches, error, behind = self._read_new()
            if matches:
                self._counts.append((now, matches))
            cutoff = now - self.config.window
            while self._counts and self._counts[0][0] <= cutoff:
                self._counts.popleft()
            self._persist(now, changed=matches > 0)
            return _Outcome(sum(n for _, n in self._counts), error, behind)
        finally:
            self._lock.release()

    def _read_new(self) -> tuple[int, str | None, int]:
        path, regex = self.config.path, self._regex
        matches, budget = 0, MAX_BYTES_PER_CHECK
        st: os.stat_result | None = None
        error: str | None = None
        try:
            st = os.stat(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            error = f"log file {path} is not readable: {os_reason(exc)}"

        cur = self._tail
        if cur is not None and error is None:
            if st is None or (st.st_dev, st.st_ino) != (cur.dev, cur.inode):
                # renamed away (or deleted): the writer may append to it until it reopens
                if self._old is not None:
                    n, used, _eof = self._old.read(budget, regex)
                    matches += n + self._old.finish(regex)
                    budget -= used
                self._old, self._old_checks, self._tail = cur, 0, None
            elif os.fstat(cur.file.fileno()).st_size < cur.offset:
                cur.restart()

        if self._tail is None and st is not None and error is None:
            try:
                self._tail = self._open()
            except FileNotFoundError:
                st = None  # rotated between stat and open; the next check opens the new one
            except IsADirectoryError:
                error = f"log file {path} is a directory"
            except OSError as exc:
                error = f"log file {path} is not readable: {os_reason(exc)}"
        if st is None and error is None:
            self._fresh = False  # when it appears, all of it is new
            error = f"log file {path} not found"

        if self._old is not None:
            n, used, eof = self._old.read(budget, regex)
            matches += n
            budget -= used
            if eof and used == 0 and self._old_checks > 0:
                matches += self._old.finish(regex)
                self._old = None
            else:
                self._old_checks += 1
        if self._tail is not None and budget > 0 and error is None:
            n, used, _eof = self._tail.read(budget, regex)
            matches += n
            budget -= used
        behind = 0
        if budget <= 0:
            behind = sum(t.remaining() for t in (self._old, self._tail) if t is not None)
        return matches, error, behind

    def _open(self) -> _Tail:
        f: io.FileIO = open(self.config.path, "rb", buffering=0)  # noqa: SIM115 - kept open
        try:
            st = os.fstat(f.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(self.config.path)
            start, skip = 0, False
            saved, self._saved = self._saved, None
            if saved is not None:
                if (saved["dev"], saved["inode"]) == (st.st_dev, st.st_ino):
                    start = saved["offset"] if saved["offset"] <= st.st_size else 0
                else:
                    self._recover_rotated(saved)
            elif self._fresh and not self.config.from_start and st.st_size > 0:
                start = st.st_size
                skip = os.pread(f.fileno(), 1, start - 1) != b"\n"
            self._fresh = False
            f.seek(start)
            return _Tail(f, st.st_dev, st.st_ino, start, skip)
        except BaseException:
            f.close()
            raise

    def _recover_rotated(self, saved: dict[str, Any]) -> None:
        """Rotated while we were down: finish the rotated file from where we stopped."""
        directory, base = os.path.split(self.config.path)
        try:
            entries = list(os.scandir(directory or "."))
        except OSError:
            return
        for entry in entries:
            if not entry.name.startswith(base) or entry.name == base:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
                if (st.st_dev, st.st_ino) != (saved["dev"], saved["inode"]):
                    continue
                if saved["offset"] > st.st_size:
                    return
                f: io.FileIO = open(entry.path, "rb", buffering=0)  # noqa: SIM115 - kept open
            except OSError:
                continue
            f.seek(saved["offset"])
            if self._old is not None:
                self._old.finish(self._regex)
            self._old = _Tail(f, st.st_dev, st.st_ino, saved["offset"], False)
            self._old_checks = 0
            return

    def _load_saved(self, now: float) -> None:
        self._loaded = True
        store = self.ctx.store
        if store is None:
            return
        try:
            with store.connect() as conn:
                value = store.get_meta(conn, self._key)
        except StoreError as exc:
            log.warning("logfile %s: cannot read its saved offset: %s", self.config.name, exc)
            return
        try:
            saved = {k: int(value[k]) for k in ("dev", "inode", "offset")}
            counts = [(float(ts), int(n)) for ts, n in value.get("counts", [])]
        except (TypeError, KeyError, ValueError):
            return  # absent or from an incompatible version: start afresh
        self._saved = saved
        self._persisted = (saved["dev"], saved["inode"], saved["offset"])
        cutoff = now - self.config.window
        self._counts.extend((ts, n) for ts, n in sorted(counts) if ts > cutoff and n > 0)

    def _persist(self, now: float, changed: bool) -> None:
        store, tail = self.ctx.store, self._tail
        if store is None or tail is None:
            return
        position = (tail.dev, tail.inode, tail.line_start)
        if position == self._persisted and not changed:
            return
        value = {
            "dev": tail.dev,
            "inode": tail.inode,
            "offset": tail.line_start,
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
            for tail in (self._old, self._tail):
                if tail is not None:
                    tail.file.close()
            self._old = self._tail = None
        finally:
            if locked:
                self._lock.release()


def _meta_key(prefix: str, name: str) -> str:
    """`prefix + name`, or `prefix + sha256(name)` when that would not fit engine_meta.key."""
    key = prefix + name
    if len(key) <= _META_KEY_LEN:
        return key
    return prefix + hashlib.sha256(name.encode()).hexdigest()[: _META_KEY_LEN - len(prefix)]
