"""Run the engine modules side by side; record each one's health for /healthz and `status`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update

from nachtwacht.clock import Clock
from nachtwacht.meter import Histograms
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store, StoreError

log = logging.getLogger(__name__)

Tick = Callable[[float], Awaitable[object]]


@dataclass
class ModuleHealth:
    name: str
    interval: float
    last_tick: float | None = None
    last_ok: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    consecutive_errors: int = 0
    # a module's own word on a tick that succeeded but is not well (a log watcher that falls
    # behind its logs); `lagging` makes it unhealthy, `detail` says why
    detail: str | None = None
    lagging: bool = False

    def healthy(self, now: float) -> bool:
        if self.consecutive_errors or self.lagging:
            return False
        # a module that has not ticked for several intervals is stuck
        return self.last_ok is not None and now - self.last_ok <= max(3 * self.interval, 30)

    def as_dict(self, now: float) -> dict[str, object]:
        return {
            "module": self.name,
            "healthy": self.healthy(now),
            "interval": self.interval,
            "last_ok": self.last_ok,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "consecutive_errors": self.consecutive_errors,
            "detail": self.detail,
        }


@dataclass
class Module:
    name: str
    interval: float
    tick: Tick
    health: ModuleHealth = field(init=False)

    def __post_init__(self) -> None:
        self.health = ModuleHealth(self.name, self.interval)


class Engine:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.modules: dict[str, Module] = {}
        self.stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        # seconds each tick took, by module, failed ones included (for /metrics)
        self.tick_durations = Histograms()

    def add(self, name: str, interval: float, tick: Tick) -> Module:
        module = Module(name, interval, tick)
        self.modules[name] = module
        return module

    async def tick_once(self, name: str) -> bool:
        """Run one module's tick with the safety net; True if it succeeded."""
        module = self.modules[name]
        now = self.clock.now()
        health = module.health
        health.last_tick = now
        try:
            await module.tick(now)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.tick_durations.observe(name, max(0.0, self.clock.now() - now))
            health.consecutive_errors += 1
            health.last_error = f"{exc.__class__.__name__}: {exc}"[:500]
            health.last_error_at = now
            log.exception("engine module %s failed (%d in a row)", name, health.consecutive_errors)
            return False
        self.tick_durations.observe(name, max(0.0, self.clock.now() - now))
        health.last_ok = now
        health.consecutive_errors = 0
        return True

    async def _run_module(self, module: Module) -> None:
        while not self.stop.is_set():
            ok = await self.tick_once(module.name)
            # back off on repeated errors, but keep retrying: a failing module recovers alone
            delay = (
                module.interval
                if ok
                else min(60.0, module.interval * (2 ** min(module.health.consecutive_errors, 6)))
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=delay)

    def start(self, extra: list[Coroutine[Any, Any, None]] | None = None) -> None:
        for module in self.modules.values():
            self._tasks.append(asyncio.create_task(self._run_module(module), name=module.name))
        for coro in extra or []:
            self._tasks.append(asyncio.create_task(coro))

    async def shutdown(self) -> None:
        self.stop.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def health(self) -> list[dict[str, object]]:
        now = self.clock.now()
        return [m.health.as_dict(now) for m in self.modules.values()]

    def persist_health(self, now: float) -> None:
        """Write module health to the store so `nachtwacht status` sees it without the server.

        Two members may insert a module's first row at once: the loser's retry updates it.
        """
        try:
            self._persist_health(now)
        except StoreError:
            self._persist_health(now)

    def _persist_health(self, now: float) -> None:
        with self.store.begin() as conn:
            for module in self.modules.values():
                h = module.health
                values = {
                    "instance": self.instance,
                    "last_tick": h.last_tick,
                    "last_ok": h.last_ok,
                    "last_error": h.last_error,
                    "last_error_at": h.last_error_at,
                    "consecutive_errors": h.consecutive_errors,
                }
                changed = conn.execute(
                    update(t.module_health)
                    .where(t.module_health.c.module == h.name)
                    .values(**values)
                ).rowcount
                if not changed:
                    conn.execute(t.module_health.insert().values(module=h.name, **values))
