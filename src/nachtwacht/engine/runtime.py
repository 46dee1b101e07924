"""Assemble one Nachtwacht process: store, probes, scheduler, writer and engine modules."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from nachtwacht.alerts import spooled as alert_records
from nachtwacht.alerts.maintenance import alert_muted_by
from nachtwacht.alerts.worker import Alerting
from nachtwacht.auth import logins
from nachtwacht.clock import Clock, SystemClock
from nachtwacht.config.schema import Settings
from nachtwacht.engine.cluster import MemberTicker, StateLoader
from nachtwacht.engine.core import Engine
from nachtwacht.engine.members import Membership
from nachtwacht.engine.ownership import owned_by
from nachtwacht.incidents import escalation
from nachtwacht.incidents import service as incidents
from nachtwacht.notify.sender import OutboxSender
from nachtwacht.probes import rollups, service
from nachtwacht.probes import spooled as probe_records
from nachtwacht.probes.context import ProbeContext
from nachtwacht.probes.location_sink import LocationSink
from nachtwacht.probes.locations import states_at
from nachtwacht.probes.scheduler import Scheduler
from nachtwacht.probes.uptime import UptimeCache, uptime
from nachtwacht.probes.writer import ResultWriter
from nachtwacht.spool import status as spool_status
from nachtwacht.spool.drain import Drainer
from nachtwacht.spool.log import SpoolLog
from nachtwacht.store.db import Store, StoreError

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    store: Store
    clock: Clock
    ctx: ProbeContext
    writer: ResultWriter
    scheduler: Scheduler
    engine: Engine
    alerting: Alerting
    sender: OutboxSender
    spool: SpoolLog
    drainer: Drainer
    membership: Membership | None = None
    members: MemberTicker | None = None
    role: str = "all"
    uptime_cache: UptimeCache = field(default_factory=UptimeCache)
    # probes with `locations:` that name this server's location run in a scheduler of their
    # own, whose results are combined with the agents' (probes.locations, decision 25)
    here: Scheduler | None = None
    location_sink: LocationSink | None = None
    _loop_task: asyncio.Task[None] | None = field(default=None, repr=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, repr=False)

    @classmethod
    def build(
        cls,
        settings: Settings,
        store: Store | None = None,
        clock: Clock | None = None,
        role: str = "all",
    ) -> Runtime:
        """Migrate the store, sync probes from the config, join the members and wire every module.

        Must be called inside a running event loop (the scheduler owns asyncio primitives).
        `role` (`serve --role`): "all", "worker" (no dashboard) or "web" (no probes, no engine).
        """
        clock = clock or SystemClock()
        store = store or Store(settings.store.url)
        store.migrate()
        now = clock.now()
        engine = Engine(store, clock)
        membership = Membership(store, settings, role=role, me=engine.instance)
        ids = _sync_probes(store, settings, now)
        # a member from here on: on SQLite a second process is refused now. A fresh reading,
        # not `now`: syncing 50,000 probes takes seconds, and the other members' beats read in
        # join() are timed by it; stamped that much early, a live member looked silent sooner
        # (a false "member silent" at a cold start of two members, docs/performance.md)
        joined = clock.now()
        membership.join(joined)
        location = settings.server.location
        plain = [p for p in settings.probes if not p.locations]
        here = [p for p in settings.probes if location in p.locations]
        # the members divide the probes without locations, and apart from them the located
        # probes checked at this server's location (the `here` scheduler, decision 25)
        checkers = membership.checkers(joined)
        owned = owned_by(membership.me, checkers, (ids[p.name] for p in plain))
        here_owned = owned_by(membership.me, checkers, (ids[p.name] for p in here))
        with store.connect() as conn:
            states = service.load_states(conn, owned)
            here_states = states_at(conn, location, here_owned)
        membership.probes_owned = len(owned) + len(here_owned)
        data_dir = settings.data_dir
        ctx = ProbeContext(clock=clock, store=store, data_dir=data_dir)
        writer = ResultWriter(store)
        scheduler = Scheduler(
            plain,
            ids,
            states,
            ctx,
            writer,
            clock,
            max_concurrency=settings.engine.max_concurrency,
            startup_spread=settings.engine.startup_spread,
            owned=owned,
        )
        sender = OutboxSender(
            store, settings, clock, engine.instance, on_outcome=incidents.record_delivery
        )
        alerting = Alerting(settings, store, clock, sender, scheduler, writer)
        scheduler.listeners.append(alerting.listener())
        located = {ids[p.name]: p for p in settings.probes if p.locations}
        alerting.located = located
        spool = SpoolLog(settings.spool_dir, max_bytes=settings.spool.max_bytes, clock=clock)
        drainer = Drainer(spool, store, clock)
        runtime = cls(
            settings, store, clock, ctx, writer, scheduler, engine, alerting, sender, spool, drainer
        )
        runtime.role = role
        runtime.membership = membership
        divided: list[tuple[Scheduler, StateLoader]] = [(scheduler, service.load_states)]
        if located:
            sink = LocationSink(store, location, located, clock)
            sink.on_commit.append(alerting.wake)
            runtime.location_sink = sink
            runtime.here = Scheduler(
                here, ids, here_states, ctx, sink, clock,
                max_concurrency=settings.engine.max_concurrency,
                startup_spread=settings.engine.startup_spread,
                owned=here_owned,
            )  # fmt: skip
            divided.append((runtime.here, lambda conn, pids: states_at(conn, location, pids)))
            engine.add("locations", settings.engine.flush_interval, sink.tick)
        runtime.members = MemberTicker(membership, divided, store, clock, runtime._set_active)
        engine.add("members", 0.5, runtime.members.tick)
        engine.add("writer", settings.engine.flush_interval, writer.tick)
        engine.add("scheduler", 5.0, runtime._check_scheduler)
        engine.add("rollups", 30.0, runtime._rollups)
        engine.add("retention", 600.0, runtime._retention)
        engine.add("health", 15.0, runtime._persist_health)
        engine.add("escalation", 5.0, runtime._escalate)
        engine.add("spool", 5.0, runtime._check_spool)
        # heartbeats, external alerts and probe results: what the drainer replays
        _install_spool_handlers(runtime)
        # each domain package adds its own modules, spool handlers and listeners
        for install in _installers():
            install(runtime)
        if role == "web":
            # HTTP only: ingest goes through its spool; probes, pages and the rest are the
            # workers' (its uptime sums are read on demand)
            for name in list(engine.modules):
                if name not in WEB_MODULES:
                    del engine.modules[name]
        return runtime

    def _set_active(self, active: bool) -> None:
        # a member that lost the store claims no page: another member sends it
        self.sender.paused = not active

    async def _check_spool(self, now: float) -> None:
        """Unhealthy while the store is down, the spool is nearly full or cannot write.

        Also leaves the snapshot in `<spool dir>/state.json` for `nachtwacht status`, which
        runs in another process and may not reach the store.
        """
        state = spool_status.snapshot(self, now)
        try:
            await asyncio.to_thread(spool_status.write_state, self.spool.directory, state)
        except OSError as exc:
            log.warning("cannot write the spool state file: %s", exc)
        drainer = self.drainer
        if (
            drainer.store_down_since is not None
            or state["spool"]["alarm"]
            or spool_status.failing(state)
        ):
            raise RuntimeError(spool_status.describe(state))

    async def spool_put(self, kind: str, payload: bytes) -> None:
        """Accept a record durably (fsync'd) and wake the drainer; SpoolError if refused."""
        await self.spool.put(kind, payload)
        self.drainer.wake()

    async def _check_scheduler(self, now: float) -> None:
        task = self._loop_task
        if task is not None and task.done():
            exc = task.exception() if not task.cancelled() else None
            log.error("probe scheduler stopped (%s); restarting it", exc)
            self._loop_task = asyncio.create_task(self.scheduler.loop(self.engine.stop))
            raise RuntimeError(f"probe scheduler had stopped: {exc!r}; restarted")

    async def _rollups(self, now: float) -> None:
        def work() -> None:
            while rollups.roll_minutes(self.store, now):
                pass
            while rollups.roll_hours(self.store, now):
                pass
            # re-read the dashboard's uptime sums here, after the watermarks moved, so that no
            # page load pays for it (at 4,000 probes the hourly re-read takes ~0.5 s)
            with self.store.connect() as conn:
                uptime(
                    conn,
                    now,
                    [r.probe_id for r in self.scheduler.slots.values()],
                    cache=self.uptime_cache,
                )

        await asyncio.to_thread(work)

    async def _retention(self, now: float) -> None:
        await asyncio.to_thread(rollups.apply_retention, self.store, now, self.settings.retention)
        # login failure counts whose window is over: pruned here, never in the login path
        await asyncio.to_thread(logins.prune_login_failures, self.store, now, self.settings.auth)

    async def _escalate(self, now: float) -> int:
        """Engine module tick: whatever escalation, page repeat, breach or reminder is due."""

        if self.membership is not None and not self.membership.active(now):
            return 0  # fenced off: the live members escalate

        def work() -> int:
            with self.store.connect() as conn:
                due = escalation.due_incidents(conn, now)
            total = 0
            for incident_id in due:
                with self.store.begin() as conn:
                    total += escalation.advance(
                        conn, self.settings, incident_id, now, alert_muted_by
                    )
            return total

        queued = await asyncio.to_thread(work)
        if queued:
            self.sender.wake()
        return queued

    async def _persist_health(self, now: float) -> None:
        await asyncio.to_thread(self.engine.persist_health, now)

    def wake_outbox(self) -> None:
        """New rows are in the outbox: send them now rather than at the next poll."""
        self.sender.wake()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self.drainer.loop(self.engine.stop), name="spool")]
        if self.role != "web":
            self._loop_task = asyncio.create_task(self.scheduler.loop(self.engine.stop))
            if self.here is not None:
                self._tasks.append(
                    asyncio.create_task(self.here.loop(self.engine.stop), name="here")
                )
            self._tasks += [
                asyncio.create_task(self.alerting.worker(self.engine.stop), name="alerts"),
                asyncio.create_task(self.sender.loop(self.engine.stop), name="outbox"),
            ]
        if self.members is not None:
            self.members.start()  # the heartbeat thread
        self.engine.start()

    async def stop(self) -> None:
        self.engine.stop.set()
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)
        await self.scheduler.close()
        if self.here is not None:
            await self.here.close()
        await self.engine.shutdown()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.writer.flush()
            if self.location_sink is not None:
                await self.location_sink.flush()
            await asyncio.to_thread(self.engine.persist_health, self.clock.now())
        except Exception:
            log.exception("final flush failed; %d results not written", self.writer.pending)
        try:
            await self.alerting.drain()
        except Exception:
            # their flips are in the store: the next start handles them
            log.exception("probe alerts left unprocessed at shutdown")
        await self.sender.close()
        try:
            await asyncio.to_thread(self.drainer.drain_all)
        except Exception:
            log.exception("spool not drained at shutdown; it is replayed at the next start")
        self.spool.close()
        await self.ctx.close()
        if self.members is not None:
            await self.members.close()
        if self.membership is not None:
            try:
                # a clean stop: the others take our probes at once, and no "silent" alert
                await asyncio.to_thread(self.membership.leave)
            except Exception as exc:
                log.warning("could not remove this member's row (%s): it is declared dead", exc)


def _sync_probes(store: Store, settings: Settings, now: float) -> dict[str, int]:
    """Probes from the config into the store; a member starting beside another may race it.

    Both insert a new probe's row: the second one's unique key fails, and its retry finds
    the row the first one committed.
    """
    for attempt in range(3):
        try:
            with store.begin() as conn:
                return service.sync_probes(conn, settings.probes, now)
        except StoreError:
            if attempt == 2:
                raise
            log.info("another member synced the probes at the same time; syncing again")
    raise AssertionError("unreachable")


# what a `--role web` process runs: its heartbeat, its spool, its health and its flushes
WEB_MODULES = frozenset({"members", "spool", "health", "writer"})


def _install_spool_handlers(runtime: Runtime) -> None:
    """What the drainer replays: heartbeats, external alerts and probe results."""
    drainer = runtime.drainer
    drainer.register(probe_records.HEARTBEAT, probe_records.store_heartbeats)
    drainer.register(alert_records.ALERT, alert_records.alert_handler(runtime))
    drainer.register(probe_records.KIND, probe_records.handler)
    runtime.writer.attach(drainer)

    def replayed(kind: str, n: int) -> None:
        # replayed alerts may have queued pages: send them now, not at the next poll
        if kind == alert_records.ALERT:
            runtime.wake_outbox()
        # replayed state changes left flips: the alert worker raises their alerts now
        if kind == probe_records.KIND:
            runtime.alerting.wake()

    drainer.listeners.append(replayed)


def _installers() -> list[Callable[[Runtime], None]]:
    from nachtwacht.agents import engine as agents
    from nachtwacht.analytics import engine as analytics
    from nachtwacht.backup import engine as backup
    from nachtwacht.checklist import engine as checklist
    from nachtwacht.drills import engine as drills
    from nachtwacht.errors import engine as errors
    from nachtwacht.evidence import engine as evidence
    from nachtwacht.handoff import engine as handoff
    from nachtwacht.oncall import engine as oncall
    from nachtwacht.reviews import engine as reviews
    from nachtwacht.runbooks import engine as runbooks
    from nachtwacht.security import engine as security
    from nachtwacht.security import respond_engine as security_respond
    from nachtwacht.statuspage import engine as statuspage
    from nachtwacht.watchdog import engine as watchdog

    return [
        errors.install,
        analytics.install,
        runbooks.install,
        evidence.install,
        checklist.install,
        reviews.install,
        backup.install,
        watchdog.install,
        agents.install,
        security.install,
        security_respond.install,
        handoff.install,
        oncall.install,
        drills.install,
        statuspage.install,
    ]
