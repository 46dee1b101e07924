"""Engine wiring: `install(runtime)` adds the scheduled-backup module when one is configured."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nachtwacht.backup.schedule import ScheduledBackups

if TYPE_CHECKING:
    from nachtwacht.engine.runtime import Runtime

# how often the module looks whether a backup is due: a 6 h interval is kept to the minute
CHECK_EVERY = 60.0


def install(runtime: Runtime) -> None:
    interval = float(runtime.settings.backup.interval)
    if interval <= 0:
        return
    scheduled = ScheduledBackups(runtime.settings, runtime.store, runtime.clock)
    runtime.engine.add("backup", min(interval, CHECK_EVERY), scheduled.tick)
