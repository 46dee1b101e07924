"""Follow a log file as it grows, across rotation, a restart and the file going away.

Used by the `logfile` probe (counts lines matching a pattern) and the Frappe monitor-log
adapter (`errors.frappe.monitor`, turns JSON lines into request metrics). A `Tailer` hands
complete lines to a sink; where it is in each file is a `Position` the caller stores.

Decisions:

- The file is followed by identity (st_dev, st_ino) and size, and kept open: each `read`
  reads only the bytes appended since the last one, at most `budget` bytes (in chunks of
  `CHUNK_BYTES`), so a huge backlog is caught up over several reads; `Read.behind` says how
  much is left.
- Only complete lines reach the sink, in blobs of one or more lines joined by "\\n" (no
  trailing newline; a "\\r" before it is kept). A partial last line is kept in memory until
  its newline arrives; a line longer than `MAX_LINE_BYTES` (a binary file, a runaway writer)
  is cut to that length rather than buffered without bound, and is still one line.
- First sight (no saved position): from the end unless `from_start`, so history is not read.
  If the file ends in the middle of a line, the rest of that line is history too and is
  skipped. A file that did not exist at first sight, a rotated-in file and a truncated file
  are read from their start: all of their content is new.
- Rename rotation (logrotate's default, `create`): when the path names another file, the
  one we had is kept open as a rotated file and read to its end before the new file, and it
  is let go only when a later read finds nothing more in it, because the writer (nginx
  before its USR1 reopen, a Frappe flush under way) may still append to it. Then its
  unterminated last line, if any, counts as a line: the writer has moved on. A deleted file
  is a rotated file too: its open handle still reads what was written before the unlink.
- Copytruncate: the same file, shorter than where we are, restarts at 0. (A copytruncate
  followed by more writes than we had read is indistinguishable from growth; that is
  copytruncate's known limit, and why rename rotation is better.)
- `position()` is each open file's (dev, inode, offset of its unfinished line). Given back
  as `resume`, a new Tailer reopens the current file there (from 0 if it is now shorter:
  truncated while we were down), and finds a file rotated while we were down, or still being
  read when we stopped, by its inode among the log's directory entries whose name starts
  with the log's name (`access.log.1`); a rotated file that is gone (compressed, deleted) is
  logged and skipped.
- Errors are values, not exceptions: `Read.error` is "<label> <path> not found", "... is a
  directory" or "... is not readable: <reason>"; rotated files are still read to their end.
- Not thread-safe: one `read` at a time (callers run it in a worker thread).
"""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
MAX_LINE_BYTES = 1024 * 1024

Sink = Callable[[bytes], None]


@dataclass(frozen=True, slots=True)
class Spot:
    """Where to resume one file: its identity and the start of its unfinished line."""

    dev: int
    inode: int
    offset: int


@dataclass(frozen=True, slots=True)
class Position:
    """The file the path names (`current`) and the rotated files still being read."""

    current: Spot | None = None
    rotated: tuple[Spot, ...] = ()

    def dump(self) -> dict[str, Any]:
        """`dev`, `inode`, `offset` (of `current`) and `rotated`: [[dev, inode, offset], ...]."""
        cur = self.current
        return {
            "dev": cur.dev if cur else None,
            "inode": cur.inode if cur else None,
            "offset": cur.offset if cur else 0,
            "rotated": [[s.dev, s.inode, s.offset] for s in self.rotated],
        }

    @classmethod
    def load(cls, value: Any) -> Position | None:
        """From `dump()` (extra keys ignored), or None if it is not one."""
        if not isinstance(value, dict):
            return None
        try:
            current = None
            if value.get("inode") is not None:
                current = Spot(int(value["dev"]), int(value["inode"]), int(value["offset"]))
            rotated = value.get("rotated")
            # an older format kept `"rotated": true` beside the rotated file's own position
            spots = rotated if isinstance(rotated, list) else []
            return cls(current, tuple(Spot(int(d), int(i), int(o)) for d, i, o in spots))
        except (TypeError, KeyError, ValueError):
            return None


@dataclass(slots=True)
class Read:
    error: str | None = None
    missing: bool = False  # the path names no file (error says so)
    used: int = 0  # bytes read
    behind: int = 0  # bytes left unread because the budget ran out


class _File:
    """One open file: where we are in it and the line not yet finished."""

    def __init__(self, file: io.FileIO, dev: int, inode: int, offset: int, skip: bool) -> None:
        self.file = file
        self.dev = dev
        self.inode = inode
        self.offset = offset  # next byte to read
        self.line_start = offset  # where the unfinished line begins: the resume point
        self.partial = b""
        self.skip = skip  # we started in the middle of a line: its tail is not a line
        self.reads = 0  # reads since it was rotated away

    def spot(self) -> Spot:
        return Spot(self.dev, self.inode, self.line_start)

    def read(self, budget: int, sink: Sink) -> tuple[int, bool]:
        """Read up to `budget` bytes; (bytes read, reached the end)."""
        used = 0
        while used < budget:
            chunk = self.file.read(min(CHUNK_BYTES, budget - used))
            if not chunk:
                return used, True
            used += len(chunk)
            self.offset += len(chunk)
            self._feed(chunk, sink)
        return used, False

    def _feed(self, chunk: bytes, sink: Sink) -> None:
        last_nl = chunk.rfind(b"\n")
        if last_nl >= 0:
            self.line_start = self.offset - (len(chunk) - last_nl - 1)
        data = self.partial + chunk if self.partial else chunk
        if self.skip:
            first_nl = data.find(b"\n")
            if first_nl < 0:
                self.partial = b""
                return
            data = data[first_nl + 1 :]
            self.skip = False
        cut = data.rfind(b"\n")
        if cut < 0:
            self.partial = data[:MAX_LINE_BYTES]
            return
        self.partial = data[cut + 1 : cut + 1 + MAX_LINE_BYTES]
        sink(_bounded(data[:cut]))

    def restart(self) -> None:
        """Truncated in place (copytruncate): everything in it now is new."""
        self.file.seek(0)
        self.offset = self.line_start = 0
        self.partial = b""
        self.skip = False

    def finish(self, sink: Sink) -> None:
        """Close; the writer has moved on, so an unterminated last line is a line."""
        tail, self.partial = self.partial, b""
        self.file.close()
        if tail and not self.skip:
            sink(tail)

    def remaining(self) -> int:
        try:
            return max(0, os.fstat(self.file.fileno()).st_size - self.offset)
        except OSError:
            return 0


def _bounded(data: bytes) -> bytes:
    """`data` with every line cut to MAX_LINE_BYTES.

    The kept partial line is at most MAX_LINE_BYTES, so only the first line of `partial +
    chunk` can be longer than a chunk: with chunks no longer than the line limit, it is the
    only one to look at.
    """
    if len(data) <= MAX_LINE_BYTES:
        return data
    if CHUNK_BYTES <= MAX_LINE_BYTES:
        first = data.find(b"\n")
        first = len(data) if first < 0 else first
        if first <= MAX_LINE_BYTES:
            return data
        return data[:MAX_LINE_BYTES] + data[first:]
    return b"\n".join(line[:MAX_LINE_BYTES] for line in data.split(b"\n"))


class Tailer:
    """Follow `path`; see the module docstring. `label` starts the error messages."""

    def __init__(
        self,
        path: str,
        *,
        label: str = "log file",
        from_start: bool = False,
        resume: Position | None = None,
    ) -> None:
        self.path = path
        self.label = label
        self.from_start = from_start
        self._cur: _File | None = None
        self._rotated: list[_File] = []  # oldest first
        self._resume = resume
        self._fresh = resume is None  # the first sight decides where to start

    @property
    def rotated(self) -> int:
        """How many rotated-away files are still open (read until they stay quiet)."""
        return len(self._rotated)

    def position(self) -> Position:
        if self._resume is not None:  # not read yet: what we were given is still where we are
            return self._resume
        return Position(
            self._cur.spot() if self._cur is not None else None,
            tuple(f.spot() for f in self._rotated),
        )

    def read(self, sink: Sink, budget: int) -> Read:
        """Hand the complete lines appended since the last read to `sink`, up to `budget`
        bytes: rotated files first, oldest first, then the file the path names."""
        if self._resume is not None:
            resume, self._resume = self._resume, None
            self._recover(resume)
        out = Read()
        path, label = self.path, self.label
        st: os.stat_result | None = None
        try:
            st = os.stat(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            out.error = f"{label} {path} is not readable: {os_reason(exc)}"

        cur = self._cur
        if cur is not None and out.error is None:
            if st is None or (st.st_dev, st.st_ino) != (cur.dev, cur.inode):
                # renamed away (or deleted): the writer may append to it until it reopens
                self._rotated.append(cur)
                self._cur = None
            elif os.fstat(cur.file.fileno()).st_size < cur.offset:
                cur.restart()

        if self._cur is None and st is not None and out.error is None:
            try:
                self._cur = self._open()
            except FileNotFoundError:
                st = None  # rotated between stat and open; the next read opens the new one
            except IsADirectoryError:
                out.error = f"{label} {path} is a directory"
            except OSError as exc:
                out.error = f"{label} {path} is not readable: {os_reason(exc)}"
        if st is None and out.error is None:
            self._fresh = False  # when it appears, all of it is new
            out.error, out.missing = f"{label} {path} not found", True

        for old in list(self._rotated):
            if out.used >= budget:
                break
            used, eof = old.read(budget - out.used, sink)
            out.used += used
            if eof and used == 0 and old.reads > 0:
                old.finish(sink)
                self._rotated.remove(old)
            else:
                old.reads += 1
        if self._cur is not None and out.used < budget and out.error is None:
            used, _eof = self._cur.read(budget - out.used, sink)
            out.used += used
        if out.used >= budget:
            files = [*self._rotated, *([self._cur] if self._cur is not None else [])]
            out.behind = sum(f.remaining() for f in files)
        return out

    def close(self) -> None:
        for f in [*self._rotated, *([self._cur] if self._cur is not None else [])]:
            f.file.close()
        self._rotated, self._cur = [], None

    # -- opening --------------------------------------------------------------------------

    def _open(self) -> _File:
        f: io.FileIO = open(self.path, "rb", buffering=0)  # noqa: SIM115 - kept open
        try:
            st = os.fstat(f.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), self.path)
            start, skip = 0, False
            if self._fresh and not self.from_start and st.st_size > 0:
                start = st.st_size
                skip = os.pread(f.fileno(), 1, start - 1) != b"\n"
            self._fresh = False
            f.seek(start)
            return _File(f, st.st_dev, st.st_ino, start, skip)
        except BaseException:
            f.close()
            raise

    def _recover(self, resume: Position) -> None:
        """Reopen the files of a saved position: rotated ones by inode beside the log."""
        self._fresh = False
        cur = resume.current
        for spot in resume.rotated:
            self._reopen_rotated(spot)
        if cur is None:
            return
        if self._reopen_current(cur):
            return
        self._reopen_rotated(cur)  # rotated while we were down: finish it first

    def _reopen_current(self, spot: Spot) -> bool:
        """Reopen the path at `spot` if it still names that file (from 0 if now shorter)."""
        try:
            f: io.FileIO = open(self.path, "rb", buffering=0)  # noqa: SIM115 - kept open
        except OSError:
            return False
        st = os.fstat(f.fileno())
        if (st.st_dev, st.st_ino) != (spot.dev, spot.inode) or not stat.S_ISREG(st.st_mode):
            f.close()
            return False
        start = spot.offset if spot.offset <= st.st_size else 0  # truncated meanwhile
        f.seek(start)
        self._cur = _File(f, st.st_dev, st.st_ino, start, False)
        return True

    def _reopen_rotated(self, spot: Spot) -> None:
        directory, base = os.path.split(self.path)
        try:
            entries = list(os.scandir(directory or "."))
        except OSError:
            entries = []
        for entry in entries:
            if not entry.name.startswith(base) or entry.name == base:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
                if (st.st_dev, st.st_ino) != (spot.dev, spot.inode):
                    continue
                if spot.offset > st.st_size or not stat.S_ISREG(st.st_mode):
                    break  # not the file we were reading any more
                f: io.FileIO = open(entry.path, "rb", buffering=0)  # noqa: SIM115 - kept open
            except OSError:
                continue
            f.seek(spot.offset)
            self._rotated.append(_File(f, st.st_dev, st.st_ino, spot.offset, False))
            return
        log.warning(
            "%s %s was rotated and the file we were reading is gone; lines written to it "
            "after the last read are not counted",
            self.label,
            self.path,
        )


def os_reason(exc: OSError) -> str:
    """`Permission denied` rather than `[Errno 13] Permission denied: '/x'`."""
    code = exc.errno
    if code is None and exc.args and isinstance(exc.args[0], int):
        code = exc.args[0]
    if code is not None and code in errno.errorcode:
        return os.strerror(code)
    return exc.strerror or str(exc) or exc.__class__.__name__
