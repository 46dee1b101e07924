"""sshd's logins from the systemd journal: `journalctl --output=json`, read after a cursor.

Hosts without rsyslog (Debian 12 and Ubuntu by default) have no /var/log/auth.log: sshd's
lines are only in journald. A `journal` source reads them through journalctl, not libsystemd:
no C binding to install, and journalctl knows every journal file format version.

Decisions:

- The position is journald's own cursor (`__CURSOR` of the last entry read), stored like a
  file's position (`engine_meta`, `security.<name>`: `{"cursor": "s=…"}`); `""` means "from
  the journal's start". First sight: the newest matching entry's cursor (`-n 1`), so history
  is not read, unless `from_start`.
- `--cursor=C` (the entry itself, then what follows), dropping that first entry when it is C,
  rather than `--after-cursor`: journalctl before v255 skipped the first *matching* entry after
  a cursor whose entry does not match the unit filter (systemd issue 30288), which would lose
  a failed login after `units` changed; `--cursor` has no skip to get wrong.
- At most `limit` entries a poll, counted here rather than with `--lines`: `-n` together with
  a cursor has meant "the first N" or "the last N" depending on the version (systemd issue
  26764). journalctl runs forward until we have `limit` + 1 lines (one more says "behind"),
  `max_bytes` of output, or the end; then it is killed. Only fields we use are asked for
  (`--output-fields`), and journalctl's JSON already turns a field over 4096 bytes into null.
- A journalctl that is missing, fails, times out (`TIMEOUT`), or sees only the user's own
  journal (not in group systemd-journal or adm) is an error string, shown in the module's
  health; the cursor stays where it was.
- Times are `__REALTIME_TIMESTAMP` (µs since the epoch, UTC): no time zone to guess.
  `MESSAGE` is a string, or an array of bytes when it is not UTF-8 (decoded with
  replacement), or null when too long (ignored).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import time
from typing import Any

from nachtwacht.security.models import Event, LoginEvent, Source
from nachtwacht.security.parsers import sshd_message

TIMEOUT = 30.0  # seconds one journalctl run may take
STDERR_LIMIT = 4096
FIELDS = "MESSAGE"  # __CURSOR and __REALTIME_TIMESTAMP always come along
# journalctl says so (exit 0) when it could open only the user's own journal files
NOT_ALL = ("insufficient permissions", "not seeing messages from other users")


def message_text(value: Any) -> str | None:
    """`MESSAGE` as journalctl's JSON gives it: a string, bytes as a list of ints, or null."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value).decode("utf-8", "replace")
    return None


class JournalParser:
    """One journalctl JSON entry → a login event; counts like the line parsers."""

    def __init__(self) -> None:
        self.malformed = 0
        self.ignored = 0

    def parse(self, entry: dict[str, Any]) -> LoginEvent | None:
        msg = message_text(entry.get("MESSAGE"))
        if msg is None:
            self.ignored += 1
            return None
        login = sshd_message(msg)
        if login is None:
            self.ignored += 1
            return None
        try:
            ts = int(entry["__REALTIME_TIMESTAMP"]) / 1_000_000
        except (KeyError, TypeError, ValueError):
            self.malformed += 1
            return None
        user, addr, ok = login
        return LoginEvent(ts, addr, user, ok)


def _run(argv: list[str], max_lines: int, max_bytes: int) -> tuple[int | None, bytes, str]:
    """Run journalctl; (exit code or None when we stopped it early, stdout, stderr).

    Stops reading at `max_lines` complete lines or `max_bytes`; raises TimeoutError after
    `TIMEOUT` seconds (the process is killed either way)."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # one killpg reaches anything it started
    )
    assert proc.stdout is not None and proc.stderr is not None
    out, err = bytearray(), bytearray()
    lines = 0
    stopped = False
    deadline = time.monotonic() + TIMEOUT
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ, out)
            sel.register(proc.stderr, selectors.EVENT_READ, err)
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"journalctl took longer than {TIMEOUT:g}s")
                for key, _ in sel.select(left):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    buf: bytearray = key.data
                    if buf is err:
                        if len(err) < STDERR_LIMIT:
                            err += chunk[: STDERR_LIMIT - len(err)]
                        continue
                    out += chunk
                    lines += chunk.count(b"\n")
                    if lines >= max_lines or len(out) >= max_bytes:
                        stopped = True
                        break
                if stopped:
                    break
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    return (None if stopped else proc.returncode), bytes(out), err.decode("utf-8", "replace")


class Journal:
    """A `journal` source: sshd's entries of `units`, read after a stored cursor."""

    def __init__(self, source: Source, cursor: Any, max_bytes: int) -> None:
        self.source = source
        stored = cursor.get("cursor") if isinstance(cursor, dict) else None
        self.cursor: dict[str, Any] | None = {"cursor": stored} if isinstance(stored, str) else None
        self.max_bytes = max(max_bytes, 1024 * 1024)  # room for one entry, however long
        self.parser = JournalParser()

    def close(self) -> None:
        """Nothing is held between polls: each one is a journalctl run."""

    def _argv(self, exe: str) -> list[str]:
        src = self.source
        argv = [exe, "--output=json", "--no-pager", f"--output-fields={FIELDS}"]
        if src.directory:
            argv.append(f"--directory={src.directory}")
        if src.file:
            argv.append(f"--file={src.file}")
        argv += [f"--unit={unit}" for unit in src.units]
        return argv

    def _journalctl(
        self, extra: list[str], max_lines: int
    ) -> tuple[list[dict[str, Any]], bool, str | None]:
        """(entries, more left than read, error)."""
        label = f"journal {self.source.name}"
        exe = shutil.which("journalctl")
        if exe is None:
            return [], False, f"{label}: journalctl is not installed (not found on PATH)"
        try:
            code, out, err = _run([*self._argv(exe), *extra], max_lines, self.max_bytes)
        except TimeoutError as exc:
            return [], False, f"{label}: {exc}"
        except OSError as exc:
            return [], False, f"{label}: journalctl could not run: {exc.strerror or exc}"
        said = " ".join(err.split())[:300]
        advice = ""
        if any(phrase in err for phrase in NOT_ALL):
            advice = "; add the user running nachtwacht to the group systemd-journal"
        if code not in (None, 0):
            return [], False, f"{label}: journalctl exited {code}: {said or 'no reason'}{advice}"
        if advice:  # exit 0, but only the user's own journal was read
            return [], False, f"{label}: journalctl cannot read the system journal ({said}){advice}"
        complete = out[: out.rfind(b"\n") + 1].splitlines()
        entries: list[dict[str, Any]] = []
        for line in complete:
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if not isinstance(entry, dict) or not isinstance(entry.get("__CURSOR"), str):
                return entries, False, f"{label}: journalctl wrote something that is not JSON"
            entries.append(entry)
        return entries, code is None, None

    def read(self, events: list[Event], limit: int) -> tuple[str | None, bool]:
        """Append the new entries' login events; (error, more entries left than `limit`)."""
        if self.cursor is None:
            if self.source.from_start:
                self.cursor = {"cursor": ""}
            else:  # first sight: from the newest entry on, as a file from its end
                last, _, error = self._journalctl(["--lines=1"], 2)
                if error is None:
                    self.cursor = {"cursor": last[-1]["__CURSOR"] if last else ""}
                return error, False
        at = self.cursor["cursor"]
        # one line more than `limit` says there is more; one more again for the cursor's own
        entries, stopped, error = self._journalctl(
            [f"--cursor={at}"] if at else [], limit + (2 if at else 1)
        )
        if entries and at and entries[0]["__CURSOR"] == at:
            entries = entries[1:]
        for entry in entries[:limit]:
            event = self.parser.parse(entry)
            if event is not None:
                events.append(event)
            self.cursor = {"cursor": entry["__CURSOR"]}
        # stopped early: at `limit` + 1 entries there is more, at `max_bytes` most likely
        return error, stopped
