"""The outbox sender: claims due rows, delivers them, and records the outcome.

Guarantees (docs/notifications.md has the long form):

- A row is claimed with a conditional UPDATE (`WHERE id = ? AND <still due>`), so two senders
  on one store never both own it; the claim is a lease (`claimed_until`). A sender killed
  mid-send leaves its rows in `sending`; any sender takes them again once the lease passes.
  That is at-least-once: the receiver dedupes by the idempotency key (notify/claim.py, on
  store/claims.py).
- At most `concurrency` rows are in flight per sender, so a `kill -9` can repeat at most that
  many deliveries. `close()` waits for the in-flight sends and records them: after a clean
  stop nothing is sent twice.
- Failures retry with backoff; a permanent error or `max_attempts` failures make the row
  `dead`. Each outcome of a row that belongs to an incident goes to the `on_outcome` listener
  in the same transaction as the row's new status (notify/outcome.py).
- Pages are claimed before everything else, and each kind of message has its own rate limit
  per destination; what the limit holds waits, none is dropped (notify/plan.py).
- A message an acknowledgement or resolution made untrue is not sent (notify/claim.py).

New work is picked up at once through `wake()`; the 1 s loop timer only serves retries.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import socket
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from nachtwacht.clock import Clock
from nachtwacht.config.schema import Settings
from nachtwacht.notify import channels
from nachtwacht.notify.channels import DeliveryError
from nachtwacht.notify.claim import Claimer
from nachtwacht.notify.outbox import DELIVERIES, OutcomeListener
from nachtwacht.notify.outcome import backoff, record
from nachtwacht.notify.plan import Plan, plan
from nachtwacht.notify.queries import DONE, rows_by_id
from nachtwacht.store import claims
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store, StoreError
from nachtwacht.wake import Wake

if TYPE_CHECKING:
    from nachtwacht.httpclient import HttpClient

log = logging.getLogger(__name__)

__all__ = ["OutboxSender", "backoff"]


class OutboxSender:
    # how long the loop sleeps when nothing wakes it: the bound on a retry's or a deferred
    # row's lateness; new rows do not wait for it (wake()). Tests raise it to prove that.
    idle_wait = 1.0

    def __init__(
        self,
        store: Store,
        settings: Settings,
        clock: Clock,
        instance: str | None = None,
        *,
        concurrency: int = 8,
        lease: float | None = None,
        batch: int = 200,
        http: HttpClient | None = None,
        on_outcome: OutcomeListener | None,
    ) -> None:
        self.store = store
        # No default: a sender of incident rows that forgot it would leave their timelines
        # silent. None only where no row belongs to an incident (test messages).
        self.on_outcome = on_outcome
        self.settings = settings
        self.clock = clock
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}"
        self.concurrency = max(1, concurrency)
        self.lease = lease
        self.batch = batch
        self._http = http
        self._own_http = http is None
        self._wake = Wake()
        self._lock = asyncio.Lock()  # one claim at a time, and none once closing
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._closing = False
        # a member that lost the store (docs/decisions/0024) claims nothing until it is back
        self.paused = False
        self._more = False  # the last claim left due rows behind for lack of capacity
        self.last_error: str | None = None
        self.sent = 0
        self.failed = 0

    # -- waking --------------------------------------------------------------------------

    def wake(self) -> None:
        """New rows were committed: send them now. Safe to call from any thread."""
        self._wake.set()

    # -- one round -----------------------------------------------------------------------

    async def tick(
        self, now: float, *, wait: bool = True, only: Collection[int] | None = None
    ) -> int:
        """Claim due rows (up to the free concurrency) and start sending them.

        With `wait` (the default) return once they are sent and marked; the loop passes
        `wait=False` so one slow receiver does not hold back the next page. `only` restricts
        the round to those row ids. Returns the number of rows claimed.
        """
        async with self._lock:
            if self._closing or self.paused:
                return 0
            capacity = self.concurrency - len(self._inflight)
            if capacity <= 0:
                self._more = True
                return 0
            busy = list(self._inflight)
            rows, more = await asyncio.to_thread(self._claim, now, capacity, busy, only)
            self._more = more
            tasks = [self._start(row) for row in rows]
        if wait and tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        return len(tasks)

    def _lease_for(self, channel: str) -> float:
        if self.lease is not None:
            return self.lease
        cfg = self.settings.notify.channels.get(channel)
        timeout = float(getattr(cfg, "timeout", 10.0))
        # an SMTP session is several round trips, each with the timeout; keep a wide margin
        return max(60.0, 4 * timeout + 10)

    def _claim(
        self, now: float, capacity: int, busy: list[int], only: Collection[int] | None
    ) -> tuple[list[dict[str, Any]], bool]:
        chosen = self._plan(now, capacity, busy, only)
        return self._take(now, chosen), chosen.more

    def _plan(
        self, now: float, capacity: int, busy: list[int], only: Collection[int] | None = None
    ) -> Plan:
        """Read the due rows; decide which to claim and which the rate limit defers."""
        with self.store.connect() as conn:
            return plan(conn, self.settings, now, capacity, busy, only, self.batch)

    def _take(self, now: float, chosen: Plan) -> list[dict[str, Any]]:
        """Claim the chosen rows with a conditional update each; return the rows we got."""
        if not chosen.chosen and not chosen.deferred:
            return []
        claimer = Claimer(self.settings, self.instance, self._lease_for, self.on_outcome)
        with self.store.begin() as conn:
            rows = claimer.take(conn, now, chosen)
        for channel in claimer.deferred:
            DELIVERIES.add((channel, "deferred"))
        return rows

    # -- delivery ------------------------------------------------------------------------

    def _start(self, row: dict[str, Any]) -> asyncio.Task[None]:
        task = asyncio.create_task(self._deliver(row), name=f"outbox-{row['id']}")
        self._inflight[row["id"]] = task

        def done(_task: asyncio.Task[None], row_id: int = row["id"]) -> None:
            self._inflight.pop(row_id, None)
            if self._more:
                self._wake.set()

        task.add_done_callback(done)
        return task

    def client(self) -> HttpClient:
        from nachtwacht.httpclient import HttpClient

        if self._http is None:
            self._http = HttpClient(follow_redirects=False)
        return self._http

    def _message(self, row: dict[str, Any], now: float) -> dict[str, Any]:
        contact = self.settings.people.contact(row["contact"]) if row["contact"] else None
        return {
            "id": row["id"],
            "key": row["idempotency_key"],
            "kind": row["kind"],
            "channel": row["channel"],
            "contact": row["contact"],
            "contact_name": contact.name if contact else None,
            "address": row["address"],
            "subject": row["subject"],
            "body": row["body"],
            "payload": json.loads(row["payload_json"]) if row["payload_json"] else {},
            "incident_id": row["incident_id"],
            "attempt": row["attempts"],
            "now": now,
        }

    async def _deliver(self, row: dict[str, Any]) -> None:
        error: DeliveryError | None = None
        cfg = self.settings.notify.channels.get(row["channel"])
        budget = self._lease_for(row["channel"]) * 0.8  # finish (or give up) inside the lease
        try:
            if cfg is None:
                raise DeliveryError(
                    f"channel '{row['channel']}' is not in the config any more", permanent=True
                )
            async with asyncio.timeout(budget):
                await channels.send(cfg, self._message(row, self.clock.now()), self.client())
        except DeliveryError as exc:
            error = exc
        except TimeoutError:
            error = DeliveryError(f"{row['channel']}: gave up after {budget:g}s")
        except Exception as exc:  # a bug in a channel must not stop the others
            log.exception("channel %s failed unexpectedly", row["channel"])
            error = DeliveryError(f"{exc.__class__.__name__}: {exc}")
        try:
            await asyncio.to_thread(self._finish, row, error, self.clock.now())
        except StoreError as exc:
            # the row stays `sending`; it is retried when its lease runs out (at-least-once)
            self.last_error = str(exc)
            log.error("could not record outbox row %s: %s", row["id"], exc)

    def _finish(self, row: dict[str, Any], error: DeliveryError | None, now: float) -> None:
        with self.store.begin() as conn:
            done = record(conn, self.settings, self.instance, row, error, now, self.on_outcome)
        if done is None:
            return
        DELIVERIES.add((row["channel"], "sent" if done.sent else "failed"))
        if done.sent:
            self.sent += 1
        else:
            self.failed += 1
            log.warning("%s", done.text)

    # -- running -------------------------------------------------------------------------

    async def loop(self, stop: asyncio.Event) -> None:
        """Tick, then wait for `wake()`, `stop`, or `idle_wait` (retries and deferred rows)."""
        self._wake.bind()
        self._prepare()
        try:
            await asyncio.to_thread(self.reclaim_orphans, self.clock.now())
        except Exception as exc:  # the store is down: the leases expire by themselves
            log.warning("outbox sender: cannot reclaim orphaned messages: %s", exc)
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set() and not self._closing:
                self._wake.clear()
                try:
                    await self.tick(self.clock.now(), wait=False)
                    self.last_error = None
                except Exception as exc:  # the store is down: keep trying, say so
                    self.last_error = f"{exc.__class__.__name__}: {exc}"
                    log.error("outbox sender: %s", self.last_error)
                waking = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait(
                        {waking, stopping},
                        timeout=self.idle_wait,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    waking.cancel()
        finally:
            stopping.cancel()

    def reclaim_orphans(self, now: float) -> int:
        """Messages a dead process on this host was sending are due now, not when the lease ends.

        After a kill -9 their leases (a minute or more) would delay pages by that much; the
        claiming process is known to be gone when its pid no longer runs here. A message the
        channel had accepted before the kill is sent again (at-least-once, with the same
        Idempotency-Key / Message-ID): the channel's answer was never recorded.
        """
        host = self.instance.rsplit(":", 1)[0]
        o = t.outbox.c
        with self.store.begin() as conn:
            owners = conn.execute(
                select(o.claimed_by).where(o.status == "sending").distinct()
            ).scalars()
            dead = [
                owner
                for owner in owners
                if owner
                and owner != self.instance
                and owner.rsplit(":", 1)[0] == host
                and not _pid_alive(owner.rsplit(":", 1)[1])
            ]
            return claims.expire(conn, t.outbox, dead, now, o.status == "sending")

    def _prepare(self) -> None:
        """Pay the one-off costs now, not on the first page after a (re)start.

        Making the HTTP client loads the CA bundle (about 30 ms on a 2-core VM) and each
        channel module is imported on first use; done lazily, both landed on the first page
        after a start: 65 ms from confirmed failure to arrival, against 7 ms later on and
        about 30 ms with this (bench/alert_latency.py).
        """
        for cfg in self.settings.notify.channels.values():
            name = channels.MODULES.get(cfg.kind)
            if name is not None:
                importlib.import_module(f"{channels.__name__}.{name}")
        self.client()

    async def close(self) -> None:
        """Stop claiming, wait for the sends in flight and record them, release the client."""
        async with self._lock:
            self._closing = True
        self._wake.set()
        while self._inflight:
            await asyncio.gather(*list(self._inflight.values()), return_exceptions=True)
        if self._http is not None and self._own_http:
            await self._http.aclose()
            self._http = None

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def deliver(
        self, ids: Collection[int], timeout: float, *, first_attempt: bool = False
    ) -> list[dict[str, Any]]:
        """Send just these rows until each is sent or dead, or `timeout` seconds pass.

        With `first_attempt`, stop once each row was tried (sent, dead, or failed once).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        wanted = list(ids)
        while True:
            await self.tick(self.clock.now(), only=wanted)
            rows = await asyncio.to_thread(rows_by_id, self.store, wanted)
            left = deadline - loop.time()
            if left <= 0 or all(
                r["status"] in DONE or (first_attempt and r["attempts"]) for r in rows
            ):
                return rows
            await asyncio.sleep(min(0.2, left))


def _pid_alive(pid: str) -> bool:
    if not pid.isdigit():
        return True  # not ours to judge: let the lease run out
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
