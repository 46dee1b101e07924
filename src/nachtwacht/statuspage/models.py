"""The `status_page:` config section: what the public page shows, and in whose words.

Only the components listed here appear, under their public names; each public component is
decided by the probes of the internal components it names. Nothing else of the config (probe
targets, people, channels) is ever read by the page.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nachtwacht.durations import Duration

Severity = Literal[1, 2, 3]
PATH = re.compile(r"^/[a-z0-9][a-z0-9/_-]{0,60}$")
# the dashboard's own prefixes: a status page there would hide (or be hidden by) a real page
TAKEN = (
    "/api", "/static", "/ui", "/incidents", "/login", "/logout", "/healthz", "/metrics", "/ack",
    "/errors", "/analytics", "/runbooks", "/reports", "/oncall", "/settings", "/probes", "/alerts",
)  # fmt: skip


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _cadence() -> dict[Severity, Duration]:
    # the protocol's status-update rhythm, looser in public: S1 hourly
    return {1: 3600.0, 2: 2 * 3600.0, 3: 4 * 3600.0}


PublicName = Annotated[str, Field(min_length=1, max_length=80)]


class StatusPageSettings(Strict):
    enabled: bool = False  # a public page is a deliberate choice
    title: str = Field(default="", max_length=120)  # empty: "<site> status"
    path: str = "/status-page"
    # requests whose Host header is this name get the status page at `/` as well
    host: str | None = Field(default=None, max_length=253)
    # the address links in mails point at; empty: https://<host>, else incidents.public_url
    public_url: str = ""
    # public name -> the internal components whose probes decide its state
    components: dict[PublicName, list[str]] = Field(default_factory=dict)
    # the protocol's "For urgent matters, please contact": never a person from people:
    contact: str = Field(default="your usual support contact", max_length=200)
    update_every: dict[Severity, Duration] = Field(default_factory=_cadence)
    history_days: int = Field(default=90, ge=7, le=400)
    maintenance_ahead: Duration = 7 * 86400.0
    past_incidents_days: int = Field(default=14, ge=0, le=90)
    cache_for: Duration = Field(default=5.0, ge=0.0, le=300.0)
    # outbox channels for subscribers; unset: the first email / webhook channel configured
    email_channel: str | None = None
    webhook_channel: str | None = None
    subscribe_per_hour: int = Field(default=10, ge=1, le=10_000)  # per client address
    pending_max: int = Field(default=1000, ge=1)  # unconfirmed subscriptions at once
    check_every: Duration = 60.0

    @field_validator("components", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        # `Website: web` is the short form of `Website: [web]`
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        value = value.rstrip("/") or value
        if not PATH.match(value):
            raise ValueError("path must look like /status-page (lower case, digits, - _ /)")
        if any(value == p or value.startswith(p + "/") for p in TAKEN):
            raise ValueError(f"path {value} is taken by the dashboard; use e.g. /status-page")
        return value

    def cadence(self, severity: int) -> float:
        return float(self.update_every.get(severity, 3600.0))  # type: ignore[call-overload]
