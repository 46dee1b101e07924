"""Probes seen from several locations: one state per (probe, location), combined by a quorum.

A probe with `locations: [local, ams, fra]` is checked at each location (the server is the
location named `server.location`, agents are the others). Each location's results go through
the same `apply` as a probe on the server (retries, pending), into a `probe_locations` row.
The probe's own state, in `probe_state`, is the combination (`combine`):

- critical (or warning) when at least `quorum` locations are confirmed critical (failing);
- pending while fewer are confirmed but, with the pending ones, a quorum could be;
- degraded ("degraded from ams") when some but fewer than a quorum fail: shown, never paged;
- ok when every location that can tell says ok.

A location that cannot tell (its agent is silent, its check said unknown, it never checked) is
left out of the count: a silent agent is an alert of its own, never an outage of its probes.

Combining happens in the store transaction that stores the result, after locking the probe's
`probe_state` row (`FOR UPDATE`; SQLite has one writer anyway): results of one probe may arrive
at several server processes at once, and each combines what the others committed. A change of
the combined state is written as today's are (`service.write_batch`: a state change and, when
it may page, a `probe_flips` row), so alerting does not know about locations at all.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from nachtwacht.probes import rollups
from nachtwacht.probes.base import ProbeConfig
from nachtwacht.probes.results import CheckResult, State, Status
from nachtwacht.probes.service import ResultRow, write_batch
from nachtwacht.probes.state import ProbeState, Transition, apply
from nachtwacht.store import tables as t

CANNOT_TELL = frozenset({State.NEW, State.UNKNOWN})
MESSAGE = 500  # characters of a combined message
STATUS_OF = {
    State.OK: Status.OK,
    State.DEGRADED: Status.WARNING,
    State.PENDING: Status.WARNING,
    State.WARNING: Status.WARNING,
    State.CRITICAL: Status.CRITICAL,
}


@dataclass(frozen=True, slots=True)
class Combined:
    state: State
    message: str
    first_failure: float | None
    failing: int  # locations confirmed failing


def combine(
    states: Mapping[str, ProbeState],
    locations: Sequence[str],
    quorum: int,
    silent: Collection[str] = (),
) -> Combined:
    """The probe's state from its locations' states (see the module doc)."""
    known = {
        loc: s
        for loc in locations
        if loc not in silent and (s := states.get(loc)) is not None and s.state not in CANNOT_TELL
    }
    critical = [loc for loc, s in known.items() if s.state is State.CRITICAL]
    failing = [loc for loc, s in known.items() if s.state in (State.WARNING, State.CRITICAL)]
    pending = [loc for loc, s in known.items() if s.state is State.PENDING]
    troubled = failing + pending
    first = min(
        (s.first_failure for loc, s in known.items() if loc in troubled and s.first_failure),
        default=None,
    )
    detail = next((known[loc].last_message for loc in troubled if known[loc].last_message), None)
    absent = [loc for loc in locations if loc not in known]
    if len(critical) >= quorum:
        state, text = State.CRITICAL, f"down from {_names(critical)}"
    elif len(failing) >= quorum:
        state, text = State.WARNING, f"failing from {_names(failing)}"
    elif len(troubled) >= quorum:
        state, text = State.PENDING, f"failing from {_names(troubled)}, confirming"
    elif troubled:
        state, text = State.DEGRADED, f"degraded from {_names(troubled)}"
    elif known:
        state, text = State.OK, f"ok from {_names(list(known))}"
    elif any(loc in states for loc in locations):
        state, text = State.UNKNOWN, "no location can tell"
    else:
        state, text = State.NEW, "not checked yet"
    if troubled and len(troubled) < quorum <= len(troubled) + len(absent):
        text += f" ({quorum} of {len(locations)} needed to page)"
    silent_here = [loc for loc in locations if loc in silent]
    if silent_here:
        text += f"; {_names(silent_here)} silent"
    if detail:
        text += f": {detail}"
    return Combined(state, text[:MESSAGE], first, len(failing))


def _names(locations: Sequence[str]) -> str:
    return ", ".join(locations)


# -- the store ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Observation:
    """One result of a located probe, as an agent (or the server's own scheduler) saw it."""

    ts: float
    status: int
    value: float | None = None
    latency_ms: float | None = None
    lag_ms: float | None = None
    message: str | None = None
    seq: int | None = None


def silent_locations(conn: Connection) -> set[str]:
    a = t.agents.c
    return set(conn.execute(select(a.location).where(a.silent_since.is_not(None))).scalars())


def location_states(conn: Connection, probe_id: int, lock: bool = False) -> dict[str, ProbeState]:
    query = select(t.probe_locations).where(t.probe_locations.c.probe_id == probe_id)
    # a locking read sees the latest commit; MariaDB's plain reads keep the snapshot of the
    # transaction's first read, which may predate the lock this transaction waited for
    rows = conn.execute(query.with_for_update() if lock else query).all()
    return {
        row.location: ProbeState(
            state=State(row.state),
            since=row.since,
            failures=row.failures or 0,
            first_failure=row.first_failure,
            last_check=row.last_check,
            last_status=Status(row.last_status) if row.last_status is not None else None,
            last_value=row.last_value,
            last_latency_ms=row.last_latency_ms,
            last_message=row.last_message,
        )
        for row in rows
    }


def location_view(
    conn: Connection, probe_id: int, config: Mapping[str, Any]
) -> dict[str, Any] | None:
    """What the probe page shows of a located probe: each location's state, the quorum."""
    names = config.get("locations") or []
    if not isinstance(names, list) or not names:
        return None
    states = location_states(conn, probe_id)
    silent = silent_locations(conn)
    down_when = config.get("down_when")
    quorum = str(down_when) if down_when else f"{len(names) // 2 + 1} of {len(names)} (a majority)"
    rows = []
    for name in names:
        s = states.get(str(name))
        rows.append(
            {
                "location": name,
                "state": "silent" if name in silent else (s.state.value if s else "new"),
                "seen_state": s.state.value if s else None,
                "since": s.since if s else None,
                "last_check": s.last_check if s else None,
                "message": s.last_message if s else None,
                "silent": name in silent,
            }
        )
    return {"down_when": quorum, "locations": rows}


def states_at(conn: Connection, location: str, ids: Iterable[int]) -> dict[int, ProbeState]:
    """Each probe's state at `location` (for the scheduler that runs them there)."""
    wanted = list(ids)
    out: dict[int, ProbeState] = {}
    for pid in wanted:
        state = location_states(conn, pid).get(location)
        if state is not None:
            out[pid] = state
    return out


def _lock_combined(conn: Connection, probe_id: int) -> ProbeState:
    """The probe's combined state, its row locked until the caller's transaction ends."""
    row = conn.execute(
        select(t.probe_state).where(t.probe_state.c.probe_id == probe_id).with_for_update()
    ).first()
    if row is None:
        raise LookupError(f"probe {probe_id} has no state row")
    return ProbeState(
        state=State(row.state),
        since=row.since,
        failures=row.failures or 0,
        first_failure=row.first_failure,
        last_check=row.last_check,
        last_status=Status(row.last_status) if row.last_status is not None else None,
        last_value=row.last_value,
        last_latency_ms=row.last_latency_ms,
        last_message=row.last_message,
    )


def _fold(
    combined: ProbeState, locs: Mapping[str, ProbeState], cfg: ProbeConfig, silent: Collection[str],
    at: float,
) -> Transition | None:  # fmt: skip
    outcome = combine(locs, cfg.locations, cfg.quorum, silent)
    before = combined.state
    combined.last_message = outcome.message
    combined.failures = outcome.failing
    combined.first_failure = outcome.first_failure
    combined.last_status = STATUS_OF.get(outcome.state, Status.UNKNOWN)
    if outcome.state == before:
        return None
    combined.state = outcome.state
    combined.since = at
    return Transition(before, outcome.state, at, outcome.first_failure)


def _save_location(
    conn: Connection, probe_id: int, location: str, state: ProbeState, existed: bool
) -> None:
    values = {
        "state": state.state.value,
        "since": state.since,
        "last_check": state.last_check,
        "last_status": int(state.last_status) if state.last_status is not None else None,
        "last_value": state.last_value,
        "last_latency_ms": state.last_latency_ms,
        "last_message": state.last_message,
        "failures": state.failures,
        "first_failure": state.first_failure,
    }
    pl = t.probe_locations
    if existed:
        conn.execute(
            update(pl).where(pl.c.probe_id == probe_id, pl.c.location == location).values(**values)
        )
    else:
        conn.execute(insert(pl).values(probe_id=probe_id, location=location, **values))


def ingest(
    conn: Connection,
    probe_id: int,
    cfg: ProbeConfig,
    location: str,
    observations: Sequence[Observation],
    silent: Collection[str] | None = None,
    late_after: float | None = None,
) -> list[Transition]:
    """Store one location's results of one probe, in order, and combine after each.

    Runs in the caller's transaction; returns the changes of the combined state (each also a
    state change row and, when it may page, a flip). Results older than `late_after` (epoch
    seconds; `rollups.late_after(now)`) may be in minutes already rolled up, and are folded in.
    """
    if not observations:
        return []
    combined = _lock_combined(conn, probe_id)
    if silent is None:
        silent = silent_locations(conn)
    locs = location_states(conn, probe_id, lock=True)
    existed = location in locs
    mine = locs.get(location) or ProbeState(since=observations[0].ts)
    locs[location] = mine
    transitions: list[tuple[int, Transition, ResultRow]] = []
    rows = []
    for ob in observations:
        result = CheckResult(Status(ob.status), ob.message or "", ob.value, ob.latency_ms)
        apply(mine, result, ob.ts, cfg.retries)
        rows.append(
            {
                "probe_id": probe_id,
                "ts": ob.ts,
                "minute": int(ob.ts // 60),
                "status": ob.status,
                "value": ob.value,
                "latency_ms": ob.latency_ms,
                "lag_ms": ob.lag_ms,
                "message": ob.message,
                "location": location,
                "seq": ob.seq,
            }
        )
        combined.last_check = ob.ts
        combined.last_value = ob.value
        combined.last_latency_ms = ob.latency_ms
        change = _fold(combined, locs, cfg, silent, ob.ts)
        if change is not None:
            row = ResultRow(
                probe_id, ob.ts, int(combined.last_status or 0), ob.value, ob.latency_ms,
                ob.lag_ms, combined.last_message,
            )  # fmt: skip
            transitions.append((probe_id, change, row))
    conn.execute(t.results.insert(), rows)
    if late_after is not None and min(ob.ts for ob in observations) < late_after:
        # older than a roll-up may have reached (an agent's backlog): into the rollups too
        rollups.fold_late(conn, rows)
    _save_location(conn, probe_id, location, mine, existed)
    write_batch(conn, [], transitions, {probe_id: combined})
    return [tr for _, tr, _ in transitions]


def recombine(
    conn: Connection, probe_id: int, cfg: ProbeConfig, now: float, silent: Collection[str]
) -> Transition | None:
    """Combine again without a new result: an agent fell silent or came back."""
    combined = _lock_combined(conn, probe_id)
    locs = location_states(conn, probe_id, lock=True)
    change = _fold(combined, locs, cfg, silent, now)
    transitions = []
    if change is not None:
        status = int(combined.last_status if combined.last_status is not None else Status.UNKNOWN)
        row = ResultRow(probe_id, now, status, None, None, None, combined.last_message)
        transitions.append((probe_id, change, row))
    write_batch(conn, [], transitions, {probe_id: combined})
    return change
