"""The per-probe state machine: retries make a failure *pending* before it is confirmed."""

from __future__ import annotations

from dataclasses import dataclass

from nachtwacht.probes.results import CheckResult, State, Status


@dataclass(slots=True)
class ProbeState:
    state: State = State.NEW
    since: float = 0.0
    failures: int = 0
    first_failure: float | None = None
    last_check: float | None = None
    last_status: Status | None = None
    last_value: float | None = None
    last_latency_ms: float | None = None
    last_message: str | None = None


@dataclass(slots=True, frozen=True)
class Transition:
    from_state: State
    to_state: State
    at: float
    first_failure: float | None


FAILING = frozenset({State.WARNING, State.CRITICAL, State.UNKNOWN})


def may_alert(transition: Transition) -> bool:
    """Could this change raise or resolve an alert (under any `alert_on`)?

    Only these leave a flip for the alert worker: new → ok, ok ⇄ pending and the like never
    page, and a start with thousands of probes would otherwise queue thousands of them.
    """
    return transition.to_state in FAILING or transition.from_state in FAILING


def apply(state: ProbeState, result: CheckResult, now: float, retries: int) -> Transition | None:
    """Fold one result into `state`; return the transition if the state changed.

    A failure from a healthy state first makes the probe pending; it becomes warning or
    critical only after `retries` further failures in a row. Between two failing statuses the
    state follows at once, and one good result recovers at once (as Uptime Kuma does).
    """
    state.last_check = now
    state.last_status = result.status
    state.last_value = result.value
    state.last_latency_ms = result.latency_ms
    state.last_message = result.message
    before = state.state
    first_failure = state.first_failure
    if result.status is Status.OK:
        state.failures = 0
        state.first_failure = None
        target = State.OK
    else:
        state.failures += 1
        if state.first_failure is None:
            state.first_failure = now
        first_failure = state.first_failure
        confirmed = State.of(result.status)
        if before in (State.NEW, State.OK, State.PENDING):
            target = confirmed if state.failures > retries else State.PENDING
        else:
            target = confirmed
    if target == before:
        return None
    state.state = target
    state.since = now
    return Transition(before, target, now, first_failure)
