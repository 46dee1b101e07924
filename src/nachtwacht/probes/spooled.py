"""Probe results and heartbeat pings as spool records: what could not go into the store.

The record formats and their replay handlers live with the data they store, so the spool (the
durable log and its drainer) depends on no domain; engine/runtime.py registers the handlers.

A results record holds a slice of a flush the result writer could not write: raw results, and
(in the last slice of a flush) the state changes and the latest state of each probe, so the
drainer writes them with the same `probes.service.write_batch` the writer uses. `maybe` marks
a flush whose COMMIT failed: it may have gone through, so the drainer skips rows that are
already there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, select

from nachtwacht.probes import service
from nachtwacht.probes.heartbeats import Event, record_ping, trim_body
from nachtwacht.probes.results import State, Status
from nachtwacht.probes.service import ResultRow
from nachtwacht.probes.state import ProbeState, Transition
from nachtwacht.store import tables as t

KIND = "results"
HEARTBEAT = "heartbeat"
SLICE = 5000  # results per record: keeps one record (and one replay statement) modest

Batch = tuple[list[ResultRow], list[tuple[int, Transition, ResultRow]], dict[int, ProbeState]]


def encode(batch: Batch, maybe: bool) -> list[bytes]:
    """One flush as one or more records (results in slices; changes and states in the last)."""
    results, transitions, states = batch
    slices = [results[i : i + SLICE] for i in range(0, len(results), SLICE)] or [[]]
    out: list[bytes] = []
    for n, part in enumerate(slices):
        last = n == len(slices) - 1
        body: dict[str, Any] = {"maybe": maybe, "results": [_row(r) for r in part]}
        if last:
            body["transitions"] = [
                [pid, tr.from_state.value, tr.to_state.value, tr.at, tr.first_failure, _row(row)]
                for pid, tr, row in transitions
            ]
            body["states"] = {str(pid): _state(s) for pid, s in states.items()}
        out.append(json.dumps(body, separators=(",", ":")).encode())
    return out


def decode(payload: bytes) -> tuple[Batch, bool]:
    body = json.loads(payload)
    results = [_unrow(r) for r in body["results"]]
    transitions = [
        (int(pid), Transition(State(f), State(to), at, ff), _unrow(row))
        for pid, f, to, at, ff, row in body.get("transitions", [])
    ]
    states = {int(pid): _unstate(s) for pid, s in body.get("states", {}).items()}
    return (results, transitions, states), bool(body.get("maybe"))


def handler(conn: Connection, payloads: list[bytes], now: float) -> None:
    """Write spooled flushes in order, as the writer would have."""
    for payload in payloads:
        (results, transitions, states), maybe = decode(payload)
        if maybe:
            results = _new_results(conn, results)
            transitions = _new_transitions(conn, transitions)
        service.write_batch(conn, results, transitions, states)


def _new_results(conn: Connection, results: Sequence[ResultRow]) -> list[ResultRow]:
    if not results:
        return []
    c = t.results.c
    probes = sorted({r.probe_id for r in results})
    lo, hi = min(r.ts for r in results), max(r.ts for r in results)
    there = set(
        conn.execute(
            select(c.probe_id, c.ts).where(c.probe_id.in_(probes), c.ts >= lo, c.ts <= hi)
        ).tuples()
    )
    return [r for r in results if (r.probe_id, r.ts) not in there]


def _new_transitions(
    conn: Connection, transitions: Sequence[tuple[int, Transition, ResultRow]]
) -> list[tuple[int, Transition, ResultRow]]:
    c = t.state_changes.c
    out = []
    for pid, tr, row in transitions:
        found = conn.execute(
            select(c.id).where(
                and_(c.probe_id == pid, c.ts == tr.at, c.to_state == tr.to_state.value)
            )
        ).first()
        if found is None:
            out.append((pid, tr, row))
    return out


def _row(r: ResultRow) -> list[Any]:
    return [r.probe_id, r.ts, r.status, r.value, r.latency_ms, r.lag_ms, r.message]


def _unrow(v: list[Any]) -> ResultRow:
    return ResultRow(int(v[0]), float(v[1]), int(v[2]), v[3], v[4], v[5], v[6])


def _state(s: ProbeState) -> list[Any]:
    return [
        s.state.value,
        s.since,
        s.failures,
        s.first_failure,
        s.last_check,
        None if s.last_status is None else int(s.last_status),
        s.last_value,
        s.last_latency_ms,
        s.last_message,
    ]


def _unstate(v: list[Any]) -> ProbeState:
    return ProbeState(
        State(v[0]),
        float(v[1]),
        int(v[2]),
        v[3],
        v[4],
        None if v[5] is None else Status(v[5]),
        v[6],
        v[7],
        v[8],
    )


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
