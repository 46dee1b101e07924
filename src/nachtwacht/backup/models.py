"""Config models of `backup:` in nachtwacht.yaml."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from nachtwacht.config.redact import SecretStr
from nachtwacht.durations import Duration


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackupSettings(Strict):
    """Scheduled backups: `interval: 6h`, `keep: 14`, `heartbeat: <token of a heartbeat probe>`.

    `dir` defaults to `backups/` in the data directory (beside the SQLite file, else ./data).
    """

    dir: Path | None = None
    # 0 = no scheduled backups; `nachtwacht backup create` still works
    interval: Duration = 0.0
    # complete backups kept in `dir`; older ones are deleted after each scheduled backup
    keep: int = Field(default=7, ge=1, le=10_000)
    # the token of a `heartbeat` probe: pinged after each scheduled backup (`fail` when it
    # failed), so a backup that stops running raises that probe's alert
    heartbeat: SecretStr | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{8,128}$")
    # the restore test: the newest backup restored into a scratch store and checked, this
    # often (0 = never scheduled; `nachtwacht backup test-restore` still works)
    restore_test_every: Duration = 30 * 86400.0
    # incidents whose timelines the restore test reads back, the newest first
    restore_test_sample: int = Field(default=20, ge=1, le=1000)
