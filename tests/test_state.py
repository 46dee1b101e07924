"""The probe state machine: pending before confirmed, immediate recovery."""

from __future__ import annotations

from nachtwacht.probes.results import CheckResult, State, Status
from nachtwacht.probes.state import ProbeState, apply

OK = CheckResult(Status.OK, "fine")
CRIT = CheckResult(Status.CRITICAL, "down")
WARN = CheckResult(Status.WARNING, "slow")


def test_one_failure_makes_a_healthy_probe_pending_not_critical() -> None:
    st = ProbeState(state=State.OK)
    tr = apply(st, CRIT, 100.0, retries=2)
    assert tr is not None and tr.to_state is State.PENDING
    assert st.state is State.PENDING
    assert st.first_failure == 100.0


def test_failure_is_confirmed_after_retries_further_failures() -> None:
    st = ProbeState(state=State.OK)
    assert apply(st, CRIT, 1.0, retries=2).to_state is State.PENDING
    assert apply(st, CRIT, 2.0, retries=2) is None  # still pending, no new transition
    tr = apply(st, CRIT, 3.0, retries=2)
    assert tr is not None and tr.from_state is State.PENDING and tr.to_state is State.CRITICAL
    assert tr.first_failure == 1.0  # when the problem started, for the incident timeline


def test_zero_retries_goes_critical_at_once() -> None:
    st = ProbeState(state=State.OK)
    assert apply(st, CRIT, 1.0, retries=0).to_state is State.CRITICAL


def test_one_good_result_recovers_from_pending_and_resets_the_count() -> None:
    st = ProbeState(state=State.OK)
    apply(st, CRIT, 1.0, retries=1)
    tr = apply(st, OK, 2.0, retries=1)
    assert tr is not None and tr.to_state is State.OK
    assert st.failures == 0 and st.first_failure is None
    assert apply(st, CRIT, 3.0, retries=1).to_state is State.PENDING


def test_confirmed_warning_escalates_to_critical_without_new_retries() -> None:
    st = ProbeState(state=State.OK)
    apply(st, WARN, 1.0, retries=1)
    assert apply(st, WARN, 2.0, retries=1).to_state is State.WARNING
    assert apply(st, CRIT, 3.0, retries=1).to_state is State.CRITICAL


def test_new_probe_that_is_ok_records_its_first_state() -> None:
    st = ProbeState()
    tr = apply(st, OK, 5.0, retries=1)
    assert tr is not None and (tr.from_state, tr.to_state) == (State.NEW, State.OK)
    assert st.since == 5.0
    assert apply(st, OK, 6.0, retries=1) is None
