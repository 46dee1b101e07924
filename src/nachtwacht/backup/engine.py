"""Engine wiring: `install(runtime)` adds the scheduled-backup module and the restore test
(backup/restoretest.py) when backups are scheduled."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from nachtwacht.backup import restoretest
from nachtwacht.backup.schedule import ScheduledBackups

if TYPE_CHECKING:
    from nachtwacht.engine.runtime import Runtime

# how often the module looks whether a backup is due: a 6 h interval is kept to the minute
CHECK_EVERY = 60.0
# how often the restore-test module looks whether a test is due (monthly by default)
RESTORE_CHECK_EVERY = 600.0


def install(runtime: Runtime) -> None:
    interval = float(runtime.settings.backup.interval)
    if interval <= 0:
        return
    scheduled = ScheduledBackups(runtime.settings, runtime.store, runtime.clock)
    runtime.engine.add("backup", min(interval, CHECK_EVERY), scheduled.tick)
    if float(runtime.settings.backup.restore_test_every) <= 0:
        return

    async def restore_tick(now: float) -> None:
        def work() -> bool:
            with runtime.store.begin() as conn:
                due = restoretest.claim_due(conn, runtime.settings, now)
            if due:
                restoretest.run(runtime.settings, runtime.store, runtime.clock, None, "scheduled")
            return due

        # a restore reads and writes a whole store's worth of rows: never on the event loop
        if await asyncio.to_thread(work):
            runtime.wake_outbox()

    runtime.engine.add("restore-test", RESTORE_CHECK_EVERY, restore_tick)
