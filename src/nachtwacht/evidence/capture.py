"""Collecting the system's state: the journal, log tails, config copies, df/free/processes/load.

Each collector returns members (a path inside the bundle and its bytes) and notes (what could
not be collected, and why). Nothing here raises for a missing tool or file: in an emergency a
partial bundle that says what is missing beats no bundle. Commands run without a shell, with
a timeout, stdin closed and output capped.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from nachtwacht.evidence.models import EvidenceSettings


@dataclass
class Collected:
    members: dict[str, bytes] = field(default_factory=dict)  # bundle path -> content
    notes: list[str] = field(default_factory=list)

    def add(self, path: str, data: bytes) -> None:
        name, n = path, 2
        while name in self.members:  # two globs matching one file, or two files of one name
            stem, dot, ext = path.rpartition(".")
            name = f"{stem}-{n}.{ext}" if dot and "/" not in ext else f"{path}-{n}"
            n += 1
        self.members[name] = data


def run(argv: list[str], timeout: float, limit: int) -> tuple[int | None, bytes, str | None]:
    """(exit code, output, why it did not run). stderr is kept after stdout: it says why."""
    exe = shutil.which(argv[0])
    if exe is None:
        return None, b"", f"{argv[0]} is not installed (not found on PATH)"
    try:
        done = subprocess.run(
            [exe, *argv[1:]],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, b"", f"{' '.join(argv)} timed out after {timeout:g}s"
    except OSError as exc:
        return None, b"", f"{argv[0]} could not run: {exc.strerror or exc}"
    out = done.stdout
    if done.stderr:
        out += b"\n--- stderr ---\n" + done.stderr
    return done.returncode, _cap(out, limit), None


def _cap(data: bytes, limit: int) -> bytes:
    if len(data) <= limit:
        return data
    return data[:limit] + f"\n[… cut: {len(data) - limit} more bytes]\n".encode()


def journal(cfg: EvidenceSettings, out: Collected) -> None:
    """`journalctl --since -1h`; a host without journald gets a note instead of a failure."""
    since = f"--since=-{int(cfg.journal_window)}s"
    code, data, why = run(
        ["journalctl", since, "--no-pager", "-o", "short-iso"],
        cfg.command_timeout,
        cfg.max_file_bytes,
    )
    if why is not None:
        out.notes.append(f"journal: not collected: {why}")
        out.add("system/journal.txt", f"journal not collected: {why}\n".encode())
        return
    if code != 0:
        out.notes.append(f"journal: journalctl exited {code}")
    out.add("system/journal.txt", data)


def tail(path: Path, lines: int, limit: int) -> bytes:
    """The last `lines` lines of a file, read backwards in blocks (a log may be gigabytes)."""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        pos, data = end, b""
        while pos > 0 and data.count(b"\n") <= lines and len(data) < limit:
            step = min(65536, pos)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + data
    kept = data.splitlines(keepends=True)[-lines:]
    text = b"".join(kept)
    return text[-limit:] if len(text) > limit else text


def _inside(path: str) -> str:
    """An absolute path as a relative path inside the bundle (`/var/log/x` -> `var/log/x`)."""
    parts = [p for p in Path(os.path.abspath(path)).parts if p not in ("/", "", ".", "..")]
    return "/".join(parts) or "unnamed"


def expand(patterns: list[str]) -> list[Path]:
    """The files `patterns` name now (globs expanded; a plain path whether it exists or not)."""
    found: list[Path] = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        found.extend(Path(m) for m in matches)
    return found


def _expand(patterns: list[str], what: str, out: Collected) -> list[Path]:
    found: list[Path] = []
    for pattern in patterns:
        matches = expand([pattern])
        if not matches:
            out.notes.append(f"{what}: {os.path.expanduser(pattern)}: no file matches")
        found.extend(matches)
    return found


def log_tails(cfg: EvidenceSettings, out: Collected) -> None:
    for path in _expand(cfg.log_files, "log", out):
        try:
            data = tail(path, cfg.tail_lines, cfg.max_file_bytes)
        except OSError as exc:
            out.notes.append(f"log: {path}: {exc.strerror or exc}")
            continue
        out.add(f"logs/{_inside(str(path))}", data)


def config_copies(cfg: EvidenceSettings, out: Collected) -> None:
    for path in _expand(cfg.config_files, "config", out):
        try:
            with path.open("rb") as fh:
                data = fh.read(cfg.max_file_bytes + 1)
        except OSError as exc:
            out.notes.append(f"config: {path}: {exc.strerror or exc}")
            continue
        out.add(f"config/{_inside(str(path))}", _cap(data, cfg.max_file_bytes))


def system(cfg: EvidenceSettings, out: Collected) -> None:
    """`df -h`, `free -m`, the process list and the load (psutil, so no `ps`/`top` needed)."""
    for name, argv in (("df", ["df", "-h"]), ("free", ["free", "-m"])):
        code, data, why = run(argv, cfg.command_timeout, cfg.max_file_bytes)
        if why is not None:
            out.notes.append(f"{name}: not collected: {why}")
            data = f"{name} not collected: {why}\n".encode()
        elif code != 0:
            out.notes.append(f"{name}: exited {code}")
        out.add(f"system/{name}.txt", data)
    out.add("system/processes.txt", processes().encode())
    out.add("system/load.json", json.dumps(load(), indent=2).encode())


def processes() -> str:
    """Every process, largest memory first: pid, ppid, user, state, RSS, CPU time, command."""
    rows: list[tuple[int, str]] = []
    attrs = ["pid", "ppid", "username", "status", "memory_info", "cpu_times", "create_time"]
    for proc in psutil.process_iter([*attrs, "name", "cmdline"]):
        info = proc.info
        mem = info.get("memory_info")
        rss = mem.rss if mem is not None else 0
        cpu = info.get("cpu_times")
        cpu_s = (cpu.user + cpu.system) if cpu is not None else 0.0
        started = info.get("create_time")
        when = (
            datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if started else "-"
        )
        command = " ".join(info.get("cmdline") or []) or f"[{info.get('name') or '?'}]"
        line = (
            f"{info['pid']:>7} {info.get('ppid') or 0:>7} {(info.get('username') or '?')[:12]:<12} "
            f"{(info.get('status') or '?')[:8]:<8} {rss / 1048576:>9.1f} {cpu_s:>9.1f} "
            f"{when} {command}"
        )
        rows.append((rss, line))
    rows.sort(key=lambda r: r[0], reverse=True)
    header = f"{'PID':>7} {'PPID':>7} {'USER':<12} {'STATE':<8} {'RSS_MB':>9} {'CPU_S':>9} "
    header += f"{'STARTED':<20} COMMAND"
    return "\n".join([header, *(line for _, line in rows)]) + "\n"


def load() -> dict[str, Any]:
    mem = psutil.virtual_memory()
    swap = psutil.swap_memory()
    load1: float | None
    load5: float | None
    load15: float | None
    try:
        load1, load5, load15 = os.getloadavg()
    except OSError:
        load1 = load5 = load15 = None
    return {
        "load_1m": load1,
        "load_5m": load5,
        "load_15m": load15,
        "cpus": psutil.cpu_count(),
        "boot_time": datetime.fromtimestamp(psutil.boot_time(), UTC).isoformat(),
        "uptime_seconds": round(time.time() - psutil.boot_time()),
        "memory": {"total": mem.total, "available": mem.available, "percent": mem.percent},
        "swap": {"total": swap.total, "used": swap.used, "percent": swap.percent},
    }


def collect(cfg: EvidenceSettings) -> Collected:
    out = Collected()
    journal(cfg, out)
    log_tails(cfg, out)
    config_copies(cfg, out)
    system(cfg, out)
    return out
