"""External alerts (generic and Alertmanager) as spool records, and their replay handler.

The ingestion door spools a request it cannot store now; the drainer (spool/drain.py) replays
it through `alerts.service.process` as the direct path would have.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from nachtwacht.alerts import service as alerts
from nachtwacht.alerts.external import from_alertmanager, from_generic

if TYPE_CHECKING:
    from nachtwacht.engine.runtime import Runtime

ALERT = "alert"


def alert_record(door: str, body: dict[str, Any], received: float) -> bytes:
    """`door` is "generic" (POST /api/v1/alerts) or "alertmanager"; `body` already validated."""
    return json.dumps({"door": door, "received": received, "body": body}).encode()


def signals_of(payload: bytes) -> list[alerts.Signal]:
    record = json.loads(payload)
    received = float(record["received"])
    if record["door"] == "alertmanager":
        return from_alertmanager(record["body"], received)
    if record["door"] == "generic":
        return [from_generic(record["body"], received)]
    raise ValueError(f"unknown alert door '{record['door']}'")


def alert_handler(runtime: Runtime) -> Any:
    def store_alerts(conn: Connection, payloads: list[bytes], now: float) -> None:
        # detected when received; processed (deduplicated, grouped, paged) now. Replaying a
        # firing alert that is already open only refreshes it, so a `maybe` record is safe.
        for payload in payloads:
            for signal in signals_of(payload):
                alerts.process(conn, runtime.settings, signal, now)

    return store_alerts
