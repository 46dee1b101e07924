"""An append-only, fsync'd, bounded record log in segment files.

Everything Nachtwacht accepts from outside (error events, heartbeats, external alerts, probe
results when the store is down) is appended here and fsync'd before the sender gets its answer;
the drainer (`spool.drain`) moves records into the store in order. A record is

    <u32 payload length> <u32 crc32(kind + payload)> <u8 kind length> <kind> <payload>

A crash can leave a torn record at the end of the last segment; it was never acknowledged
(acknowledgement follows the fsync), so opening the log cuts it off.

A write or fsync that fails (a full disk, above all) is cut off the same way, at once, back to
the end of the last acknowledged record, so nothing the sender was refused is replayed. The log
then refuses appends with `SpoolUnwritable` (its `retry_after` says when it tries again) and
says why in `fault`; the next append after a short back-off tries the disk again, so the log
recovers by itself once there is room, without a restart.

Positions are (segment number, byte offset). The drainer keeps its cursor in the store, in the
same transaction as the rows it wrote, so a record is stored exactly once across kill -9; this
module only deletes segments wholly before a position it is told is committed.

Why one module of some 490 lines: the record format, the torn-tail repair on open, the cut-back
and retry after a failed write, and trimming are one invariant over the same segment files and
file descriptor (everything before `end` is whole and fsync'd); split, each part would need the
others' internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nachtwacht.clock import Clock, SystemClock, iso

HEADER = struct.Struct("<IIB")
SUFFIX = ".spool"
# after a failed write the disk is tried again at the next append, but no sooner than this; the
# wait doubles while it keeps failing, so a full disk is not hammered by every sender
RETRY_FIRST = 1.0
RETRY_MAX = 10.0


class SpoolError(Exception):
    """The spool cannot be opened or written; the message says why."""


class SpoolFull(SpoolError):
    """Accepting this would pass the configured size bound: refuse rather than lose."""


class SpoolUnwritable(SpoolError):
    """The disk refused the last write (full, read-only, I/O error); try again later."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_after(exc: Exception) -> int:
    """Whole seconds a refused sender should wait (the `Retry-After` of a 503)."""
    wait = getattr(exc, "retry_after", RETRY_MAX)
    return max(1, int(wait + 0.999))


Position = tuple[int, int]


@dataclass(frozen=True)
class Record:
    kind: str
    payload: bytes
    end: Position  # the position just after this record: commit it once the record is stored


def in_use(directory: Path) -> bool:
    """Does another process hold this spool (a `serve` running on the same data dir)?"""
    lock = Path(directory) / "lock"
    if not lock.exists():
        return False
    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


class SpoolLog:
    def __init__(
        self,
        directory: Path,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 16 << 20,
        fsync: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.clock = clock or SystemClock()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fh = open(self.directory / "lock", "a+")  # noqa: SIM115 - held while open
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_fh.close()
            raise SpoolError(
                f"spool {self.directory} is in use by another Nachtwacht process"
            ) from None
        self._mutex = threading.Lock()
        segments = self.segments()
        self._segment = segments[-1] if segments else 1
        # a raw descriptor, not a buffered file: a failed write must leave no bytes in a
        # buffer that a later flush or close would push out behind our back
        self._fd: int | None = _open_segment(self._path(self._segment))
        self._repair_tail()
        # True from a write until its fsync returns: bytes past `_sizes` may be on disk, and
        # must be cut off before anything else is appended behind them
        self._torn = False
        self._dir_unsynced = False  # a new segment's directory entry is not durable yet
        self._fault: str | None = None  # why the disk refused the last write
        self._fault_since: float | None = None
        self._retry_at = 0.0
        self._backoff = RETRY_FIRST
        self._sizes = {n: self._path(n).stat().st_size for n in self.segments()}
        # where the newest record of each kind ends: "is a record of this kind still waiting?"
        # is then one comparison with the drainer's cursor (ingestion keeps per-kind order)
        self._last_end: dict[str, Position] = self._scan_kinds()
        self._pending: list[tuple[str, bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.appended = 0  # records appended since start, for metrics

    # -- writing ----------------------------------------------------------------------------

    def append_many(self, records: list[tuple[str, bytes]]) -> Position:
        """Append and fsync; return the end position. All or nothing.

        Raises SpoolFull past the size bound, SpoolUnwritable when the disk refuses (now, or
        at the last attempt and it is not yet time for the next one).
        """
        blobs = [_encode(kind, payload) for kind, payload in records]
        size = sum(len(b) for b in blobs)
        with self._mutex:
            if self.bytes_used + size > self.max_bytes:
                raise SpoolFull(
                    f"spool {self.directory} is full ({self.bytes_used} of {self.max_bytes} bytes)"
                )
            now = self.clock.now()
            if self._fault is not None and now < self._retry_at:
                raise SpoolUnwritable(self._refusal(), self._retry_at - now)
            try:
                self._ready()
                if self._sizes.get(self._segment, 0) >= self.segment_bytes:
                    self._rotate()
                start = self._sizes.get(self._segment, 0)
                self._torn = True
                _write_all(self._descriptor(), b"".join(blobs))
                if self.fsync:
                    os.fsync(self._descriptor())
                self._torn = False
            except OSError as exc:
                self._failed(exc, now)
                raise SpoolUnwritable(self._refusal(), self._retry_at - now) from exc
            self._fault = self._fault_since = None
            self._backoff = RETRY_FIRST
            self._sizes[self._segment] = start + size
            offset = start
            for (kind, _), blob in zip(records, blobs, strict=True):
                offset += len(blob)
                self._last_end[kind] = (self._segment, offset)
            self.appended += len(blobs)
            return (self._segment, self._sizes[self._segment])

    def append(self, kind: str, payload: bytes) -> Position:
        return self.append_many([(kind, payload)])

    async def put(self, kind: str, payload: bytes) -> None:
        """Append with group commit: concurrent callers share one write and one fsync."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((kind, payload, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_pending())
        await future

    async def _flush_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self.append_many, [(k, p) for k, p, _ in batch])
            except SpoolFull:
                # the batch is all or nothing; retry one by one so that those that fit get in
                for kind, payload, future in batch:
                    try:
                        await asyncio.to_thread(self.append, kind, payload)
                    except Exception as exc:  # noqa: BLE001 - handed to the waiting caller
                        future.set_exception(exc)
                    else:
                        future.set_result(None)
                continue
            except Exception as exc:  # noqa: BLE001 - handed to the waiting callers
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, _, future in batch:
                if not future.done():
                    future.set_result(None)

    def _rotate(self) -> None:
        # the new segment is opened before the old is let go: if the disk refuses, nothing moved
        fd = _open_segment(self._path(self._segment + 1))
        old, self._fd = self._fd, fd
        self._segment += 1
        self._sizes[self._segment] = 0
        if old is not None:
            _close_quietly(old)
        self._dir_unsynced = True
        _fsync_dir(self.directory)
        self._dir_unsynced = False

    # -- a refused write ----------------------------------------------------------------------

    def _failed(self, exc: OSError, now: float) -> None:
        """Remember why, schedule the next attempt, and cut what the failed write left."""
        if self._fault is None:
            self._fault_since = now
            self._backoff = RETRY_FIRST
        else:
            self._backoff = min(RETRY_MAX, self._backoff * 2)
        self._fault = exc.strerror or str(exc)
        self._retry_at = now + self._backoff
        # the cut is tried again before the next write; until then nothing is written
        with contextlib.suppress(OSError):
            self._ready()

    def _ready(self) -> None:
        """Before writing: cut a failed write's bytes, make a new segment's entry durable."""
        if self._torn:
            fd = self._descriptor()
            # back to the last acknowledged byte, not to the last whole record: a failed batch
            # may have written whole records whose senders were told no, and they will retry
            os.ftruncate(fd, self._sizes.get(self._segment, 0))
            os.fsync(fd)
            self._torn = False
        if self._dir_unsynced:
            _fsync_dir(self.directory)
            self._dir_unsynced = False

    def _descriptor(self) -> int:
        if self._fd is None:
            self._fd = _open_segment(self._path(self._segment))
        return self._fd

    def _refusal(self) -> str:
        return f"spool {self.directory} cannot write: {self._fault} since {iso(self._fault_since)}"

    @property
    def fault(self) -> dict[str, Any] | None:
        """Why the spool cannot write and since when (None: the last write went through)."""
        with self._mutex:
            if self._fault is None:
                return None
            return {
                "error": self._fault,
                "since": self._fault_since,
                "since_iso": iso(self._fault_since),
                "retry_at": self._retry_at,
            }

    # -- reading ----------------------------------------------------------------------------

    def read(
        self, after: Position | None, limit: int = 1000, max_bytes: int = 8 << 20
    ) -> list[Record]:
        """Up to `limit` records after `after` (None: from the oldest record kept)."""
        segments = self.segments()
        if not segments:
            return []
        seg, offset = after if after is not None else (segments[0], 0)
        if seg < segments[0]:
            seg, offset = segments[0], 0
        out: list[Record] = []
        taken = 0
        for number in [n for n in segments if n >= seg]:
            start = offset if number == seg else 0
            with self._mutex:
                end_of_data = self._sizes.get(number, 0)
            if start >= end_of_data:
                continue
            with open(self._path(number), "rb") as fh:
                fh.seek(start)
                data = fh.read(end_of_data - start)
            pos = 0
            while pos + HEADER.size <= len(data) and len(out) < limit and taken < max_bytes:
                length, crc, klen = HEADER.unpack_from(data, pos)
                body_end = pos + HEADER.size + klen + length
                if body_end > len(data):
                    break
                body = data[pos + HEADER.size : body_end]
                if zlib.crc32(body) != crc:
                    raise SpoolError(
                        f"spool {self._path(number)}: damaged record at byte {start + pos}"
                    )
                out.append(
                    Record(body[:klen].decode(), bytes(body[klen:]), (number, start + body_end))
                )
                taken += length
                pos = body_end
            if len(out) >= limit or taken >= max_bytes:
                break
        return out

    def trim(self, committed: Position) -> int:
        """Delete segments wholly before `committed` (not the current one); return bytes freed."""
        freed = 0
        with self._mutex:
            for number in self.segments():
                if number >= committed[0] or number == self._segment:
                    continue
                freed += self._sizes.pop(number, 0)
                self._path(number).unlink(missing_ok=True)
            if (
                committed[0] == self._segment
                and committed[1] == self._sizes.get(self._segment)
                and committed[1] >= self.segment_bytes
                and not self._torn
            ):
                # only housekeeping: the next append rotates (or reports the disk)
                with contextlib.suppress(OSError):
                    self._rotate()
        return freed

    def backlog(self, committed: Position | None) -> int:
        """Bytes appended after `committed` (None: everything kept)."""
        with self._mutex:
            total = 0
            for number, size in self._sizes.items():
                if committed is None or number > committed[0]:
                    total += size
                elif number == committed[0]:
                    total += max(0, size - committed[1])
            return total

    # -- state ------------------------------------------------------------------------------

    def last_end(self, kind: str) -> Position | None:
        """The end position of the newest record of `kind` in the log (None: there is none)."""
        with self._mutex:
            return self._last_end.get(kind)

    @property
    def end(self) -> Position:
        """The position after the newest record."""
        with self._mutex:
            return (self._segment, self._sizes.get(self._segment, 0))

    @property
    def bytes_used(self) -> int:
        return sum(self._sizes.values())

    @property
    def fill(self) -> float:
        return self.bytes_used / self.max_bytes if self.max_bytes else 0.0

    def segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.directory.glob(f"*{SUFFIX}") if p.stem.isdigit())

    def close(self) -> None:
        with self._mutex:
            if self._torn:
                with contextlib.suppress(OSError):  # opening the log again cuts the torn tail
                    self._ready()
            if self._fd is not None:
                _close_quietly(self._fd)
                self._fd = None
        self._lock_fh.close()

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:010d}{SUFFIX}"

    def _scan_kinds(self) -> dict[str, Position]:
        """Walk every kept segment's record headers once (at open) for `_last_end`."""
        found: dict[str, Position] = {}
        for number in self.segments():
            data = self._path(number).read_bytes()
            pos = 0
            while pos + HEADER.size <= len(data):
                length, _crc, klen = HEADER.unpack_from(data, pos)
                end = pos + HEADER.size + klen + length
                if end > len(data):
                    break
                kind = data[pos + HEADER.size : pos + HEADER.size + klen].decode(errors="replace")
                found[kind] = (number, end)
                pos = end
        return found

    def _repair_tail(self) -> None:
        """Cut a torn record off the end of the current segment (it was never acknowledged)."""
        path = self._path(self._segment)
        data = path.read_bytes()
        pos = 0
        while pos + HEADER.size <= len(data):
            length, crc, klen = HEADER.unpack_from(data, pos)
            end = pos + HEADER.size + klen + length
            if end > len(data) or zlib.crc32(data[pos + HEADER.size : end]) != crc:
                break
            pos = end
        if pos != len(data):
            with open(path, "r+b") as fh:
                fh.truncate(pos)
                os.fsync(fh.fileno())


def _encode(kind: str, payload: bytes) -> bytes:
    k = kind.encode()
    return HEADER.pack(len(payload), zlib.crc32(k + payload), len(k)) + k + payload


def _open_segment(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _write_all(fd: int, data: bytes) -> None:
    """os.write until all is written: a nearly full disk takes part of a write, then refuses."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def _close_quietly(fd: int) -> None:
    # the descriptor is released either way, and nothing unacknowledged depends on it
    with contextlib.suppress(OSError):
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def on_disk(directory: Path) -> dict[str, int]:
    """What a spool directory holds, read without its lock (for `status` and `doctor`).

    `nachtwacht serve` holds the spool's lock while it runs; these numbers come from file
    sizes only, so they never wait for it or disturb it.
    """
    directory = Path(directory)
    segments = (
        sorted(p for p in directory.glob(f"*{SUFFIX}") if p.stem.isdigit())
        if directory.is_dir()
        else []
    )
    sizes = {int(p.stem): p.stat().st_size for p in segments if p.exists()}
    dead = directory / "dead"
    return {
        "bytes": sum(sizes.values()),
        "segments": len(sizes),
        "dead": len(list(dead.glob("*.json"))) if dead.is_dir() else 0,
    }


def backlog_on_disk(directory: Path, committed: Position | None) -> int:
    """Bytes after `committed` in a spool directory, from file sizes (no lock needed)."""
    total = 0
    for p in Path(directory).glob(f"*{SUFFIX}"):
        if not p.stem.isdigit():
            continue
        number, size = int(p.stem), p.stat().st_size
        if committed is None or number > committed[0]:
            total += size
        elif number == committed[0]:
            total += max(0, size - committed[1])
    return total
