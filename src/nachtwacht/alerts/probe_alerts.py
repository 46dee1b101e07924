"""What a probe's state means for its alert: by change (flips) and by level (reconcile).

A state change that can page is stored as a `probe_flips` row in the transaction that commits
the probe's new state (`probes.service.write_batch`, for the writer and the spool's replay
alike). `claim_flip` deletes one row in the transaction that raises or resolves the alert, so
the alert and the end of the obligation commit together: a process that dies anywhere in
between leaves the row, and the next worker (after a restart, or another process on the same
store) handles it. Two workers racing for one row: the second DELETE finds nothing.

`reconcile` is the net under that: by level, not by change. A probe failing at its alerting
level with no firing alert gets one; a recovered probe whose alert still fires gets it
resolved. It runs at start and periodically, so even a state written by something that left no
flip (an older version, a hand-edited store) is paged.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, select

from nachtwacht.alerts.service import Signal
from nachtwacht.probes.base import ProbeConfig
from nachtwacht.probes.results import State
from nachtwacht.probes.state import FAILING, Transition
from nachtwacht.store import tables as t

HEALTHY = {State.OK, State.NEW}
TITLE_MESSAGE = 120  # characters of the probe's message kept in a title

StateOf = Callable[[str], State | None]


def fingerprint(cfg: ProbeConfig) -> str:
    return f"probe:{cfg.name}"


def alerting(cfg: ProbeConfig, state: State) -> bool:
    """Is `state` at the level where this probe alerts?"""
    return (state is State.CRITICAL and cfg.alert_on != "never") or (
        state is State.WARNING and cfg.alert_on == "warning"
    )


def title(cfg: ProbeConfig, state: State, message: str | None) -> str:
    """What is broken, for the alert, the incident and the page: 'shop-web CRITICAL — refused'.

    The description says what the probe expects when all is well ("Shop front page answers"),
    so it is no title for a failure; it goes with the alert as what was expected.
    """
    text = f"{cfg.name} {state.value.upper()}"
    first_line = (message or "").strip().splitlines()[0] if (message or "").strip() else ""
    if first_line:
        if len(first_line) > TITLE_MESSAGE:
            first_line = first_line[: TITLE_MESSAGE - 1] + "…"
        text += f" — {first_line}"
    return text


def _signal(
    cfg: ProbeConfig,
    probe_id: int,
    firing: bool,
    state: State,
    started_at: float,
    detected_at: float,
    message: str | None,
    inhibited_by: str | None = None,
) -> Signal:
    return Signal(
        fingerprint=fingerprint(cfg),
        source="probe",
        title=title(cfg, state, message),
        component=cfg.component,
        severity=cfg.severity,
        firing=firing,
        started_at=started_at,
        detected_at=detected_at,
        message=message or "",
        probe_id=probe_id,
        probe_name=cfg.name,
        state=state.value,
        inhibited_by=inhibited_by,
        expected=cfg.description,
    )


def _inhibitor(cfg: ProbeConfig, state_of: StateOf) -> str | None:
    return next((dep for dep in cfg.depends_on if state_of(dep) not in (None, *HEALTHY)), None)


def signal_for(
    cfg: ProbeConfig,
    probe_id: int,
    transition: Transition,
    message: str | None,
    state_of: StateOf,
) -> Signal | None:
    """The alert signal a probe transition means, if any."""
    to = transition.to_state
    started = transition.first_failure or transition.at
    if alerting(cfg, to):
        return _signal(
            cfg, probe_id, True, to, started, transition.at, message, _inhibitor(cfg, state_of)
        )
    if transition.from_state in FAILING and to not in (State.PENDING, State.UNKNOWN):
        # recovered, or fell below the alerting level: resolve any open alert. Unknown is no
        # recovery: the check could not tell (a timeout reading its own data, a tool that
        # failed), so an open alert stays open until a check says it is well again.
        return _signal(cfg, probe_id, False, to, started, transition.at, message)
    return None


def _resolvable(cfg: ProbeConfig, state: State) -> bool:
    """May an open alert of this probe be resolved, its state being `state`?"""
    return not alerting(cfg, state) and state not in (State.PENDING, State.NEW, State.UNKNOWN)


# -- flips ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Flip:
    id: int
    probe_id: int
    transition: Transition
    message: str | None


def pending_flips(conn: Connection, limit: int = 500, exclude: Collection[int] = ()) -> list[Flip]:
    """The oldest flips nobody has handled yet, in the order they were committed."""
    f = t.probe_flips.c
    query = select(t.probe_flips).order_by(f.id).limit(limit)
    if exclude:
        query = query.where(f.probe_id.not_in(list(exclude)))
    rows = conn.execute(query).all()
    return [
        Flip(
            int(r.id),
            int(r.probe_id),
            Transition(State(r.from_state), State(r.to_state), float(r.ts), r.first_failure),
            r.message,
        )
        for r in rows
    ]


def claim_flip(conn: Connection, flip_id: int) -> bool:
    """Take one flip in the caller's transaction; False if another worker has it."""
    return conn.execute(delete(t.probe_flips).where(t.probe_flips.c.id == flip_id)).rowcount == 1


def probes_with_flips(conn: Connection) -> set[int]:
    return set(conn.execute(select(t.probe_flips.c.probe_id).distinct()).scalars())


def recovered_since(conn: Connection, flip: Flip, cfg: ProbeConfig, probe_id: int) -> Signal | None:
    """The recovery that ended a failing flip's outage before its alert was raised, if any.

    A process that starts with a spool of results loads probe states older than the spool's,
    so a recovery seen after the restart can leave no flip of its own: the stored state is
    healthy and newer than the flip, and no later flip follows. Raising the alert alone would
    page "CRITICAL" for an outage that is over.
    """
    f = t.probe_flips.c
    later = conn.execute(
        select(f.id).where(f.probe_id == probe_id, f.id > flip.id).limit(1)
    ).first()
    if later is not None:
        return None
    row = conn.execute(select(t.probe_state).where(t.probe_state.c.probe_id == probe_id)).first()
    if row is None or row.since <= flip.transition.at:
        return None
    state = State(row.state)
    if not _resolvable(cfg, state):
        return None
    return _signal(cfg, probe_id, False, state, row.since, row.since, row.last_message)


# -- reconcile by level -----------------------------------------------------------------------

REMOVED = "no longer monitored: the probe was removed from the configuration or disabled"


def reconcile_signals(
    conn: Connection, configs: Mapping[int, ProbeConfig], state_of: StateOf
) -> list[Signal]:
    """Signals that make alerts match the committed probe states (see the module doc).

    Each is checked again by `still_holds` in the transaction that applies it: this read is
    one view among several statements, and a writer or another worker may move on meanwhile.
    """
    s = t.probe_state.c
    skip = probes_with_flips(conn)  # the flip will say it, with the right times
    failing = conn.execute(
        select(t.probe_state).where(s.state.in_([State.CRITICAL.value, State.WARNING.value]))
    ).all()
    a = t.alerts.c
    firing: dict[str, Any] = {
        row.fingerprint: row
        for row in conn.execute(
            select(a.fingerprint, a.title, a.component, a.severity, a.started_at).where(
                # a drill's synthetic probe alert is no probe's: not this reconcile's to end
                a.status == "firing",
                a.source == "probe",
                a.drill_id.is_(None),
            )
        ).all()
    }
    out: list[Signal] = []
    for row in failing:
        cfg = configs.get(row.probe_id)
        if cfg is None or row.probe_id in skip:
            continue
        state = State(row.state)
        if alerting(cfg, state) and fingerprint(cfg) not in firing:
            started = row.first_failure or row.since
            inhibitor = _inhibitor(cfg, state_of)
            out.append(
                _signal(
                    cfg, row.probe_id, True, state, started, row.since, row.last_message, inhibitor
                )
            )
    by_fingerprint = {fingerprint(cfg): (pid, cfg) for pid, cfg in configs.items()}
    firing_ids = [by_fingerprint[fp][0] for fp in firing if fp in by_fingerprint]
    if firing_ids:
        rows = conn.execute(select(t.probe_state).where(s.probe_id.in_(firing_ids))).all()
        for row in rows:
            pid = row.probe_id
            cfg = configs[pid]
            state = State(row.state)
            if pid in skip or not _resolvable(cfg, state):
                continue
            out.append(_signal(cfg, pid, False, state, row.since, row.since, row.last_message))
    for fp, alert in firing.items():
        if fp not in by_fingerprint:
            # a probe that is gone can never recover: its incident would page on forever
            out.append(
                Signal(
                    fingerprint=fp,
                    source="probe",
                    title=alert.title,
                    component=alert.component,
                    severity=alert.severity,
                    firing=False,
                    started_at=alert.started_at,
                    detected_at=alert.started_at,
                    message=REMOVED,
                    labels={"removed": True},
                )
            )
    return out


def still_holds(conn: Connection, signal: Signal, cfg: ProbeConfig | None) -> bool:
    """Is a reconcile signal still right, read in the transaction that will apply it?"""
    if signal.probe_id is None or cfg is None:
        return True  # a removed probe: nothing of it changes any more
    f = t.probe_flips.c
    if conn.execute(select(f.id).where(f.probe_id == signal.probe_id).limit(1)).first():
        return False
    raw = lock_probe(conn, signal.probe_id)
    if raw is None:
        return False
    state = State(raw)
    return alerting(cfg, state) if signal.firing else _resolvable(cfg, state)


def lock_probe(conn: Connection, probe_id: int) -> str | None:
    """Lock the probe's state row until commit; return its state (None: never checked).

    Alerts of one probe are then raised one transaction after the other, whichever member
    raises them (docs/decisions/0024): the second sees the first's alert and deduplicates,
    where two concurrent inserts would have paged twice. SQLite has one writer anyway.
    """
    s = t.probe_state.c
    return conn.execute(
        select(s.state).where(s.probe_id == probe_id).with_for_update()
    ).scalar_one_or_none()


def committed_state(store: Any, name: str) -> State | None:
    """The stored state of the probe `name` (one another member checks), None if unknown.

    `store` is a `store.db.Store`; read on a connection of its own, since the caller is inside
    another transaction only for the alert it is raising.
    """
    with store.connect() as conn:
        value = conn.execute(
            select(t.probe_state.c.state)
            .join(t.probes, t.probes.c.id == t.probe_state.c.probe_id)
            .where(t.probes.c.name == name)
        ).scalar()
    return State(value) if value is not None else None
