"""Config models of `watchdog:` in nachtwacht.yaml."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from nachtwacht.config.redact import CapabilityUrl
from nachtwacht.durations import Duration


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WatchdogSettings(Strict):
    # dead man's switch: an external heartbeat URL (a second Nachtwacht's /ping/<token>,
    # healthchecks.io, Uptime Kuma push...) called every `deadman_interval`; when the calls
    # stop, that service raises the alarm that this one cannot
    # (a capability: whoever has it can keep the switch green from anywhere)
    deadman_url: CapabilityUrl | None = None
    deadman_interval: Duration = Field(default=60.0, gt=0)
    deadman_method: Literal["GET", "POST"] = "POST"
    deadman_timeout: Duration = Field(default=10.0, gt=0)
    # the store unavailable for longer than this is an S1 alert, paged directly (not through
    # the outbox, which lives in the store) to the S1 policy's first-step targets
    store_alarm: bool = True
    store_down_grace: Duration = Field(default=60.0, ge=0)
