"""Scheduled backups: every `backup.interval`, keep `backup.keep`, report to a heartbeat.

After each scheduled backup the heartbeat probe named by `backup.heartbeat` (its token) gets a
`success` ping, recorded through the same service function as `/ping/<token>`; a failed backup
sends `fail`. A backup that silently stops running therefore shows up as that heartbeat going
late, and a failing one as it going critical at once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from nachtwacht.backup.manifest import BackupError
from nachtwacht.backup.service import (
    BackupInfo,
    backup_dir,
    create_backup,
    newest_created_at,
    prune,
)
from nachtwacht.clock import Clock
from nachtwacht.config.schema import Settings
from nachtwacht.probes.heartbeats import Event, record_ping
from nachtwacht.store.db import Store, StoreError

log = logging.getLogger(__name__)
# after a failure, try again this soon (or at the next interval, if that is sooner)
RETRY_SECONDS = 600.0


@dataclass
class ScheduledBackups:
    settings: Settings
    store: Store
    clock: Clock
    # when the last backup ran (or was tried); read from the directory at the first tick, so a
    # restart does not make an extra backup
    last_run: float | None = None
    last_failed: bool = False
    _loaded: bool = False

    @property
    def interval(self) -> float:
        return float(self.settings.backup.interval)

    def due(self, now: float) -> bool:
        if not self._loaded:
            self.last_run = newest_created_at(backup_dir(self.settings))
            self._loaded = True
        if self.last_run is None or now < self.last_run:  # none yet, or the clock went back
            return True
        wait = min(self.interval, RETRY_SECONDS) if self.last_failed else self.interval
        return now - self.last_run >= wait

    def run_once(self, now: float) -> BackupInfo | None:
        """Back up if due, prune, ping; None when not due. Raises after a failed backup."""
        if self.interval <= 0 or not self.due(now):
            return None
        self.last_run = now
        directory = backup_dir(self.settings)
        try:
            info = create_backup(self.store, directory, now)
        except BackupError as exc:
            self.last_failed = True
            self._ping("fail", f"backup failed: {exc}")
            raise
        self.last_failed = False
        deleted = prune(directory, self.settings.backup.keep)
        manifest = info.manifest
        summary = (
            f"backup {info.name}: {manifest.total_rows if manifest else 0} rows, "
            f"{manifest.total_bytes if manifest else 0} bytes"
            + (f"; deleted {len(deleted)} old" if deleted else "")
        )
        log.info("%s", summary)
        self._ping("success", summary)
        return info

    def _ping(self, event: Event, body: str) -> None:
        token = self.settings.backup.heartbeat
        if not token:
            return
        try:
            with self.store.begin() as conn:
                record_ping(conn, token, event, self.clock.now(), body)
        except StoreError:
            # the heartbeat then goes late, which is the alarm
            log.exception("could not record the backup heartbeat %s", event)

    async def tick(self, now: float) -> None:
        # a backup reads the whole store and writes files: never on the event loop
        await asyncio.to_thread(self.run_once, now)
