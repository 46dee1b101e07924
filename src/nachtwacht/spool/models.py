"""Config of the local spool (`spool:` in nachtwacht.yaml)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class SpoolSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # default: `spool/` beside the SQLite file, or ./data/spool for a server store
    dir: Path | None = None
    max_bytes: int = Field(default=1 << 30, ge=1 << 20)
    # above this fill the spool raises an alarm (health degraded, an S1 alert)
    alarm_fill: float = Field(default=0.8, gt=0, le=1)
