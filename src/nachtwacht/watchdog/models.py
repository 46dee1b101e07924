"""Config models of `watchdog:` in nachtwacht.yaml."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WatchdogSettings(Strict):
    pass
