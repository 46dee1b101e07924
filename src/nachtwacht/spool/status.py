"""What the spool and the store look like right now, for /healthz, `status` and `doctor`.

`nachtwacht serve` writes this snapshot to `<spool dir>/state.json` every few seconds (the
`spool` engine module), so `nachtwacht status`, a separate process that cannot open the
spool (serve holds its lock) and may not reach the store, can still say "the store is down
since 14:02 and 38 MB are waiting in the spool".
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

from nachtwacht.clock import iso
from nachtwacht.spool.log import on_disk

STATE_FILE = "state.json"
STALE_AFTER = 60.0  # a state file older than this is from a serve that is not running
# the state file is padded to this size, so that on a full disk it can still be rewritten in
# place (blocks it already has) when a new file cannot be created
STATE_BYTES = 4096


def snapshot(runtime: Any, now: float) -> dict[str, Any]:
    """Store availability and spool fill as one dict (times as epoch seconds and ISO)."""
    drainer = runtime.drainer
    spool = runtime.spool
    cfg = runtime.settings.spool
    down = drainer.store_down_since
    used = spool.bytes_used
    fill = spool.fill
    fault = spool.fault
    return {
        "at": now,
        "store": {
            "available": down is None,
            "down_since": down,
            "down_since_iso": iso(down),
            "down_for_seconds": None if down is None else round(now - down, 1),
            "error": drainer.last_error,
        },
        "spool": {
            "dir": str(spool.directory),
            "bytes": used,
            "backlog_bytes": drainer.backlog_bytes,
            "max_bytes": spool.max_bytes,
            "fill": round(fill, 4),
            "alarm_fill": cfg.alarm_fill,
            "alarm": fill >= cfg.alarm_fill,
            "stored_since_start": drainer.stored,
            "dead": drainer.dead,
            "writable": fault is None,
            "write_error": None if fault is None else fault["error"],
            "write_error_since": None if fault is None else fault["since"],
            "write_error_since_iso": None if fault is None else fault["since_iso"],
        },
    }


def failing(state: dict[str, Any]) -> bool:
    """Whether serve's spool refuses writes (older state files do not say: they did not)."""
    return state["spool"].get("writable") is False


def write_state(directory: Path, state: dict[str, Any]) -> None:
    """Replace the state file atomically (a reader never sees half of it).

    On a full disk (when `status` most needs to hear that the spool cannot write) a new file
    cannot be written; the old one is then overwritten in place, within the blocks it has.
    """
    path = Path(directory) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    text = json.dumps(state, default=str).ljust(STATE_BYTES)  # JSON allows trailing blanks
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or len(text) > STATE_BYTES:
            raise
        tmp.unlink(missing_ok=True)
        # a reader racing this may see a mix and take it for no state at all (`read_state`
        # answers None), which is better than the last word before the disk filled
        with open(path, "r+") as fh:  # raises again if there is no old file to reuse
            fh.write(text)
            fh.truncate()


def read_state(directory: Path, now: float) -> dict[str, Any] | None:
    """The last state serve wrote, with `stale: true` when serve stopped writing it."""
    path = Path(directory) / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    state["stale"] = now - float(state.get("at", 0)) > STALE_AFTER
    return state


def offline(directory: Path, max_bytes: int, alarm_fill: float, now: float) -> dict[str, Any]:
    """The spool as seen from another process: file sizes plus serve's last state file."""
    disk = on_disk(directory)
    fill = disk["bytes"] / max_bytes if max_bytes else 0.0
    return {
        "dir": str(directory),
        "bytes": disk["bytes"],
        "max_bytes": max_bytes,
        "fill": round(fill, 4),
        "alarm_fill": alarm_fill,
        "alarm": fill >= alarm_fill,
        "dead": disk["dead"],
        "serve": read_state(directory, now),
    }


def describe(state: dict[str, Any]) -> str:
    """One line: "store DOWN since ... (N s): error; spool 12.0 MB waiting (1% of 1.0 GB)"."""
    store, spool = state["store"], state["spool"]
    if store["available"]:
        head = "store available"
    else:
        head = f"store DOWN since {store['down_since_iso']} ({store['down_for_seconds']:.0f} s)"
        if store.get("error"):
            head += f": {store['error']}"
    waiting = spool.get("backlog_bytes", spool["bytes"])
    text = (
        f"{head}; spool {megabytes(waiting)} waiting "
        f"({spool['fill']:.1%} of {megabytes(spool['max_bytes'])} used)"
    )
    if failing(state):
        text += (
            f" — spool cannot write: {spool['write_error']} since {spool['write_error_since_iso']}"
        )
    if spool.get("alarm"):
        text += f" — ABOVE the alarm level {spool['alarm_fill']:.0%}"
    return text


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
