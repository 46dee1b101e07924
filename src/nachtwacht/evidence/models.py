"""Config models of `evidence:` in nachtwacht.yaml."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from nachtwacht.durations import Duration


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EvidenceSettings(Strict):
    # where bundles are written (default: <data_dir>/evidence)
    dir: Path | None = None
    # log files whose last `tail_lines` lines go in the bundle; globs such as
    # /var/log/nginx/*.log are expanded when the bundle is captured
    log_files: list[str] = Field(default_factory=list)
    tail_lines: int = Field(default=1000, ge=1, le=1_000_000)
    # config files copied whole, with passwords, tokens and keys masked
    config_files: list[str] = Field(default_factory=list)
    # how far back the system journal goes (the protocol: the last hour)
    journal_window: Duration = 3600.0
    # a cap per collected file, so one runaway log cannot fill the disk with evidence
    max_file_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    # how long each command (journalctl, df, free) may take
    command_timeout: Duration = 30.0

    def directory(self, data_dir: Path) -> Path:
        return self.dir if self.dir is not None else data_dir / "evidence"
