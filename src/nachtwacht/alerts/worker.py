"""The alert worker: turns committed probe flips into alerts, then wakes the outbox sender.

The worker raises and resolves probe alerts from committed `probe_flips` rows (see
`alerts.probe_alerts`), never from memory: a transition is a flip in the store from the
commit that changed the probe's state, and stops being one only in the transaction that
handled it. A confirmed failure makes the writer commit at once and wake the worker, which
wakes the outbox sender, so the page still leaves in milliseconds; a kill -9 anywhere on that
path leaves the flip for the next start. At start and every `RECONCILE_EVERY` seconds the
worker also reconciles alerts with probe states by level.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from nachtwacht.alerts import probe_alerts
from nachtwacht.alerts import service as alerts
from nachtwacht.alerts.service import Signal
from nachtwacht.clock import Clock
from nachtwacht.config.schema import Settings
from nachtwacht.probes.base import ProbeConfig
from nachtwacht.probes.results import CheckResult, State
from nachtwacht.probes.scheduler import ProbeSlot, Scheduler
from nachtwacht.probes.state import Transition, may_alert
from nachtwacht.probes.writer import ResultWriter
from nachtwacht.store.db import Store
from nachtwacht.wake import Wake

log = logging.getLogger(__name__)

POLL = 5.0  # flips another process committed are seen within this (ours wake the worker)
RECONCILE_EVERY = 30.0
RETRY = 1.0
BATCH = 500  # flips read at once


class Alerting:
    """Turns committed probe flips into alerts; wakes the outbox sender."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        clock: Clock,
        sender,  # noqa: ANN001 - notify.sender.OutboxSender
        scheduler: Scheduler | None = None,
        writer: ResultWriter | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.sender = sender
        self.scheduler = scheduler
        self.writer = writer
        self.processed = 0  # flips handled by this process
        self.reconciled = 0  # alerts raised or resolved by reconciling
        self.last_reconcile: float | None = None
        self._wake = Wake()
        # probes with `locations:` (not in `scheduler`: run by agents and the server's own
        # location scheduler); their combined state leaves flips like any other probe's
        self.located: dict[int, ProbeConfig] = {}
        if writer is not None:
            writer.on_commit.append(self.wake)

    # -- wiring -------------------------------------------------------------------------------

    def listener(self) -> Callable[[ProbeSlot, CheckResult, Transition | None], None]:
        """Scheduler listener: a change that may page is written now, so its flip is handled."""

        def on_result(slot: ProbeSlot, result: CheckResult, transition: Transition | None) -> None:
            if transition is not None and self.writer is not None and may_alert(transition):
                self.writer.flush_soon()

        return on_result

    def wake(self) -> None:
        """New flips are committed (callable from any thread)."""
        self._wake.set()

    def _state_of(self, name: str) -> State | None:
        if self.scheduler is None:
            return None
        other = self.scheduler.by_name.get(name)
        if other is not None:
            return other.state.state
        # checked by another member (docs/decisions/0024): its committed state
        return probe_alerts.committed_state(self.store, name)

    def _configs(self) -> dict[int, ProbeConfig]:
        """Every enabled probe's config, whichever member checks it: a flip is anyone's."""
        if self.scheduler is None:
            return dict(self.located)
        return {**self.located, **self.scheduler.configs}

    # -- the work -----------------------------------------------------------------------------

    def process_sync(self, signal: Signal) -> int:
        with self.store.begin() as conn:
            outcome = alerts.process(conn, self.settings, signal, self.clock.now())
        return outcome.queued

    def handle_flips(self) -> int:
        """Handle every committed flip, oldest first, one transaction each; pages queued.

        A flip that fails stays (retried on the next pass), and the later flips of the same
        probe wait behind it so its alert never sees its changes out of order.
        """
        configs = self._configs()
        queued = 0
        blocked: set[int] = set()
        failure: Exception | None = None
        while True:
            with self.store.connect() as conn:
                flips = probe_alerts.pending_flips(conn, BATCH, blocked)
            for flip in flips:
                if flip.probe_id in blocked:
                    continue
                try:
                    queued += self._handle(flip, configs)
                except Exception as exc:
                    blocked.add(flip.probe_id)
                    failure = exc
                    log.exception("alert for probe %d failed; retrying", flip.probe_id)
            if len(flips) < BATCH:
                break
        if failure is not None:
            raise failure
        return queued

    def _handle(self, flip: probe_alerts.Flip, configs: dict[int, ProbeConfig]) -> int:
        with self.store.begin() as conn:
            if not probe_alerts.claim_flip(conn, flip.id):
                return 0  # another worker has it
            # two members may hold flips of one probe (a takeover's overlap): one at a time
            probe_alerts.lock_probe(conn, flip.probe_id)
            cfg = configs.get(flip.probe_id)
            signal = (
                probe_alerts.signal_for(
                    cfg, flip.probe_id, flip.transition, flip.message, self._state_of
                )
                if cfg is not None
                else None
            )
            queued = 0
            if signal is not None:
                now = self.clock.now()
                over = (
                    probe_alerts.recovered_since(conn, flip, cfg, flip.probe_id)
                    if signal.firing and cfg is not None
                    else None
                )
                queued = alerts.process(conn, self.settings, signal, now).queued
                if over is not None:
                    # recorded as the outage it was; resolving withdraws its queued pages
                    queued = alerts.process(conn, self.settings, over, now).queued
        self.processed += 1
        return queued

    def reconcile(self) -> int:
        """Raise or resolve probe alerts whose level disagrees with the committed state."""
        if self.scheduler is None:
            return 0  # no probe configuration to compare with
        now = self.clock.now()
        configs = self._configs()
        with self.store.connect() as conn:
            signals = probe_alerts.reconcile_signals(conn, configs, self._state_of)
        queued = 0
        for signal in signals:
            cfg = configs.get(signal.probe_id) if signal.probe_id is not None else None
            with self.store.begin() as conn:
                if not probe_alerts.still_holds(conn, signal, cfg):
                    continue
                outcome = alerts.process(conn, self.settings, signal, now)
            if outcome.action in ("opened", "resolved"):
                self.reconciled += 1
                log.warning(
                    "reconciled %s: alert %s (the state was stored without its alert)",
                    signal.fingerprint,
                    outcome.action,
                )
            queued += outcome.queued
        self.last_reconcile = now
        return queued

    async def drain(self, now: float | None = None) -> int:
        """Write buffered state changes, then handle every flip (the worker and tests)."""
        if self.writer is not None:
            await self.writer.flush()
        queued = await asyncio.to_thread(self.handle_flips)
        if queued:
            self.sender.wake()
        return queued

    async def worker(self, stop: asyncio.Event) -> None:
        self._wake.bind()
        while not stop.is_set():
            self._wake.clear()
            delay = POLL
            try:
                if await asyncio.to_thread(self.handle_flips):
                    self.sender.wake()
            except Exception:
                log.exception("probe alerts failed; retrying in %.0f s", RETRY)
                delay = RETRY
            last = self.last_reconcile
            if last is None or self.clock.now() - last >= RECONCILE_EVERY:
                # apart from the flips: one that always fails must not stop the net under them
                try:
                    if await asyncio.to_thread(self.reconcile):
                        self.sender.wake()
                except Exception:
                    log.exception("reconciling probe alerts failed; retrying in %.0f s", RETRY)
                    delay = RETRY
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    waiter = asyncio.ensure_future(self._wake.wait())
                    stopper = asyncio.ensure_future(stop.wait())
                    try:
                        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        waiter.cancel()
                        stopper.cancel()
