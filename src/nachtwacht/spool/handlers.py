"""Spool record kinds of the ingestion doors, and the handlers that store them later.

Each handler writes a record exactly as the direct path would have, with the same service
function: `record_ping` for heartbeats, `alerts.service.process` for external alerts,
`probes.service.write_batch` for probe results (`spool.results`). The drainer calls them in
order inside its transaction, which also moves its cursor: stored once, even across kill -9.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from nachtwacht.alerts import service as alerts
from nachtwacht.alerts.external import from_alertmanager, from_generic
from nachtwacht.probes.heartbeats import Event, record_ping, trim_body
from nachtwacht.spool import results
from nachtwacht.store import tables as t

if TYPE_CHECKING:
    from nachtwacht.engine.runtime import Runtime

HEARTBEAT = "heartbeat"
ALERT = "alert"
RESULTS = results.KIND


# -- heartbeats ------------------------------------------------------------------------------


def heartbeat_record(
    token: str,
    event: Event,
    ts: float,
    body: bytes | None,
    remote: str | None,
    maybe: bool,
) -> bytes:
    return json.dumps(
        {
            "token": token,
            "event": event,
            "ts": ts,
            "body": trim_body(body),
            "remote": remote,
            "maybe": maybe,
        },
        separators=(",", ":"),
    ).encode()


def store_heartbeats(conn: Connection, payloads: list[bytes], now: float) -> None:
    for payload in payloads:
        ping = json.loads(payload)
        if ping.get("maybe") and _ping_stored(conn, ping):
            continue
        record_ping(conn, ping["token"], ping["event"], ping["ts"], ping["body"], ping["remote"])


def _ping_stored(conn: Connection, ping: dict[str, Any]) -> bool:
    # the receive time is stamped once per request (microseconds): token, time and event
    # together name one ping
    c = t.heartbeat_pings.c
    query = select(c.id).where(c.token == ping["token"], c.ts == ping["ts"])
    return conn.execute(query.where(c.event == ping["event"])).first() is not None


# -- external alerts -------------------------------------------------------------------------


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


# -- wiring ----------------------------------------------------------------------------------


def install(runtime: Runtime) -> None:
    drainer = runtime.drainer
    drainer.register(HEARTBEAT, store_heartbeats)
    drainer.register(ALERT, alert_handler(runtime))
    drainer.register(RESULTS, results.handler)
    runtime.writer.attach(drainer)

    def replayed(kind: str, n: int) -> None:
        # replayed alerts may have queued pages: send them now, not at the next poll
        if kind == ALERT:
            runtime.wake_outbox()
        # replayed state changes left flips: the alert worker raises their alerts now
        if kind == RESULTS:
            runtime.alerting.wake()

    drainer.listeners.append(replayed)
