"""Engine wiring: the `security` module polls `security.sources` every `security.interval`.

Only with sources configured. A source that cannot be read (missing, unreadable, a Frappe
database that refuses) shows in the module's health (/healthz, `nachtwacht status`) after the
others have been read and their findings recorded.

Falling behind: a poll reads at most `max_bytes_per_poll` of a file (`MAX_ROWS_PER_POLL` of
an Activity Log). While a poll leaves some unread, the tick polls again, up to
`CATCH_UP_POLLS` polls a tick; what is still unread then stays for the next tick, never
skipped, and the module's health says so: `detail` "behind its logs: web 52428800 bytes"
and unhealthy, until a tick catches up.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from nachtwacht.security.watch import Polled, Watch

if TYPE_CHECKING:
    from nachtwacht.engine.runtime import Runtime

MODULE = "security"
CATCH_UP_POLLS = 5


class SecurityLogError(Exception):
    """A source cannot be read."""


def behind_text(behind: dict[str, str]) -> str:
    return "behind its logs: " + ", ".join(f"{name} {left}" for name, left in behind.items())


def install(runtime: Runtime) -> None:
    cfg = runtime.settings.security
    if not cfg.sources or MODULE in runtime.engine.modules:
        return
    watch = Watch(runtime.store, runtime.settings, runtime.clock, cfg.sources)

    async def tick(now: float) -> None:
        errors: list[str] = []
        polled = Polled()
        for _ in range(CATCH_UP_POLLS):
            polled = await asyncio.to_thread(watch.poll)
            if polled.queued:
                runtime.wake_outbox()
            errors += [e for e in polled.errors if e not in errors]
            if not polled.behind:
                break
        health = module.health
        health.lagging = bool(polled.behind)
        health.detail = behind_text(polled.behind) if polled.behind else None
        if errors:
            raise SecurityLogError("; ".join(errors))

    module = runtime.engine.add(MODULE, cfg.interval, tick)
