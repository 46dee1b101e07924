"""What the spool and the store look like right now, for /healthz, `status` and `doctor`.

`nachtwacht serve` writes this snapshot to `<spool dir>/state.json` every few seconds (the
`spool` engine module), so `nachtwacht status`, a separate process that cannot open the
spool (serve holds its lock) and may not reach the store, can still say "the store is down
since 14:02 and 38 MB are waiting in the spool".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nachtwacht.clock import iso
from nachtwacht.spool.log import on_disk

STATE_FILE = "state.json"
STALE_AFTER = 60.0  # a state file older than this is from a serve that is not running


def snapshot(runtime: Any, now: float) -> dict[str, Any]:
    """Store availability and spool fill as one dict (times as epoch seconds and ISO)."""
    drainer = runtime.drainer
    spool = runtime.spool
    cfg = runtime.settings.spool
    down = drainer.store_down_since
    used = spool.bytes_used
    fill = spool.fill
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
        },
    }


def write_state(directory: Path, state: dict[str, Any]) -> None:
    """Replace the state file atomically (a reader never sees half of it)."""
    path = Path(directory) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, default=str))
    os.replace(tmp, path)


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
    if spool.get("alarm"):
        text += f" — ABOVE the alarm level {spool['alarm_fill']:.0%}"
    return text


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
