"""Wire probe state changes into the alert pipeline, and run escalation and the outbox.

Probe transitions arrive on the event loop from the scheduler; they are queued and processed
one transaction each in a worker thread, and the outbox sender is woken at once, so a
confirmed failure reaches the first page in milliseconds rather than at the next poll.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nachtwacht.alerts import service as alerts
from nachtwacht.alerts.service import Signal
from nachtwacht.clock import Clock
from nachtwacht.config.schema import Settings
from nachtwacht.incidents import escalation
from nachtwacht.probes.results import CheckResult, State
from nachtwacht.probes.scheduler import Runtime as ProbeRuntime
from nachtwacht.probes.state import Transition
from nachtwacht.store.db import Store

log = logging.getLogger(__name__)

FAILING = {State.WARNING, State.CRITICAL, State.UNKNOWN}
HEALTHY = {State.OK, State.NEW}


def signal_for(
    rt: ProbeRuntime,
    transition: Transition,
    result: CheckResult,
    state_of: Callable[[str], State | None],
) -> Signal | None:
    """The alert signal a probe transition means, if any."""
    cfg = rt.config
    to = transition.to_state
    alerting = (to is State.CRITICAL and cfg.alert_on != "never") or (
        to is State.WARNING and cfg.alert_on == "warning"
    )
    base = {
        "fingerprint": f"probe:{cfg.name}",
        "source": "probe",
        "title": cfg.description or cfg.name,
        "component": cfg.component,
        "severity": cfg.severity,
        "started_at": transition.first_failure or transition.at,
        "detected_at": transition.at,
        "message": result.message,
        "probe_id": rt.probe_id,
        "probe_name": cfg.name,
        "state": to.value,
    }
    if alerting:
        inhibited_by = next(
            (dep for dep in cfg.depends_on if state_of(dep) not in (None, *HEALTHY)), None
        )
        return Signal(firing=True, inhibited_by=inhibited_by, **base)
    if transition.from_state in FAILING and to not in (State.PENDING,):
        # recovered, or fell below the alerting level: resolve any open alert
        return Signal(firing=False, **base)
    return None


class Alerting:
    """The alert worker, the escalation module and the outbox sender of one process."""

    def __init__(self, settings: Settings, store: Store, clock: Clock, sender) -> None:  # noqa: ANN001
        self.settings = settings
        self.store = store
        self.clock = clock
        self.sender = sender
        self.queue: asyncio.Queue[Signal] = asyncio.Queue()
        self.processed = 0

    def listener(self, scheduler) -> Callable:  # noqa: ANN001
        def state_of(name: str) -> State | None:
            other = scheduler.by_name.get(name)
            return other.state.state if other is not None else None

        def on_result(rt: ProbeRuntime, result: CheckResult, transition: Transition | None) -> None:
            if transition is None:
                return
            signal = signal_for(rt, transition, result, state_of)
            if signal is not None:
                self.queue.put_nowait(signal)

        return on_result

    def process_sync(self, signal: Signal) -> int:
        with self.store.begin() as conn:
            outcome = alerts.process(conn, self.settings, signal, self.clock.now())
        return outcome.queued

    async def drain(self, now: float | None = None) -> int:
        """Process every queued signal (the worker loop, and tests, call this)."""
        queued = 0
        while not self.queue.empty():
            signal = self.queue.get_nowait()
            try:
                queued += await asyncio.to_thread(self.process_sync, signal)
            except Exception:
                # keep the signal: it is retried on the next pass, never dropped
                self.queue.put_nowait(signal)
                raise
            self.processed += 1
        if queued:
            self.sender.wake()
        return queued

    async def worker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            get = asyncio.ensure_future(self.queue.get())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({get, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if get not in done:
                get.cancel()
                return
            self.queue.put_nowait(get.result())
            try:
                await self.drain()
            except Exception:
                log.exception("alert processing failed; retrying in 1 s")
                await asyncio.sleep(1)

    async def escalate(self, now: float) -> int:
        """Engine module tick: whatever escalation, page repeat, breach or reminder is due."""

        def work() -> int:
            with self.store.connect() as conn:
                due = escalation.due_incidents(conn, now)
            total = 0
            for incident_id in due:
                with self.store.begin() as conn:
                    total += escalation.advance(conn, self.settings, incident_id, now)
            return total

        queued = await asyncio.to_thread(work)
        if queued:
            self.sender.wake()
        return queued
