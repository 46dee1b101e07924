"""Assemble one Nachtwacht process: store, probes, scheduler, writer and engine modules."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from nachtwacht.clock import Clock, SystemClock
from nachtwacht.config.schema import Settings
from nachtwacht.engine.core import Engine
from nachtwacht.probes import rollups, service
from nachtwacht.probes.context import ProbeContext
from nachtwacht.probes.scheduler import Scheduler
from nachtwacht.probes.writer import ResultWriter
from nachtwacht.store.db import Store

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
    _loop_task: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls, settings: Settings, store: Store | None = None, clock: Clock | None = None
    ) -> Runtime:
        """Migrate the store, sync probes from the config and wire every module.

        Must be called inside a running event loop (the scheduler owns asyncio primitives).
        """
        clock = clock or SystemClock()
        store = store or Store(settings.store.url)
        store.migrate()
        now = clock.now()
        with store.begin() as conn:
            ids = service.sync_probes(conn, settings.probes, now)
            states = service.load_states(conn, ids.values())
        data_dir = _data_dir(settings)
        ctx = ProbeContext(clock=clock, store=store, data_dir=data_dir)
        writer = ResultWriter(store)
        scheduler = Scheduler(
            settings.probes,
            ids,
            states,
            ctx,
            writer,
            clock,
            max_concurrency=settings.engine.max_concurrency,
            startup_spread=settings.engine.startup_spread,
        )
        engine = Engine(store, clock)
        runtime = cls(settings, store, clock, ctx, writer, scheduler, engine)
        engine.add("writer", settings.engine.flush_interval, writer.tick)
        engine.add("scheduler", 5.0, runtime._check_scheduler)
        engine.add("rollups", 30.0, runtime._rollups)
        engine.add("retention", 600.0, runtime._retention)
        engine.add("health", 15.0, runtime._persist_health)
        return runtime

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

        await asyncio.to_thread(work)

    async def _retention(self, now: float) -> None:
        await asyncio.to_thread(rollups.apply_retention, self.store, now, self.settings.retention)

    async def _persist_health(self, now: float) -> None:
        await asyncio.to_thread(self.engine.persist_health, now)

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self.scheduler.loop(self.engine.stop))
        self.engine.start()

    async def stop(self) -> None:
        self.engine.stop.set()
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)
        await self.scheduler.close()
        await self.engine.shutdown()
        try:
            await asyncio.to_thread(self.writer.flush_sync)
            await asyncio.to_thread(self.engine.persist_health, self.clock.now())
        except Exception:
            log.exception("final flush failed; %d results not written", self.writer.pending)
        await self.ctx.close()


def _data_dir(settings: Settings) -> Path:
    url = settings.store.url
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url.removeprefix("sqlite:///")).parent
    return Path("data")
