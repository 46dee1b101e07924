"""Config models of `errors:` in nachtwacht.yaml.

Spool record kind `error_event`: orjson of
    {"project_id": int, "received_at": float, "event": {<Sentry event payload>}}
The Sentry endpoints, the JSON endpoint and the Frappe Error Log poller all produce it; the
drainer's handler (errors/service.py) groups and stores it. `event["event_id"]` is 32 hex
digits; a source that re-reads the same error (the Frappe poller after a restart) derives it
deterministically, so the `(project_id, event_id)` uniqueness deduplicates.
"""

from __future__ import annotations

from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator

from nachtwacht.config import limits
from nachtwacht.config.redact import SecretStr
from nachtwacht.durations import Duration
from nachtwacht.incidents.models import Severity

Level = Literal["debug", "info", "warning", "error", "fatal"]
LEVEL_ORDER = ("debug", "info", "warning", "error", "fatal")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FrappeErrorLog(Strict):
    """Poll a Frappe site's Error Log doctype over its REST API (token auth)."""

    name: str = Field(min_length=1)
    url: HttpUrl  # the site, e.g. https://erp.example.com
    api_key: SecretStr
    api_secret: SecretStr
    project: str  # the Nachtwacht project its errors go to (`nachtwacht project add`)
    interval: Duration = 60.0
    environment: str = "production"
    timeout: Duration = 20.0
    # the site's time zone (System Settings > Time Zone): Frappe writes `creation` in it,
    # without an offset. Default: Nachtwacht's `timezone`.
    site_timezone: str | None = None
    # re-list this far behind the newest creation seen: a row can become visible after newer
    # ones (deferred inserts, long transactions); names already taken are skipped
    lookback: Duration = 600.0
    # on the very first poll, take the Error Logs created within this long before now
    backfill: Duration = 86400.0
    page_size: int = Field(default=500, ge=1, le=5000)  # limit_page_length of one listing

    @field_validator("site_timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return value if value is None else _zone_name(value)


class FrappeMonitorLog(Strict):
    """Tail a bench's logs/monitor.json.log for request latency and status codes."""

    name: str = Field(min_length=1)
    path: str
    interval: Duration = 15.0
    site: str | None = None  # count only this site's requests (the log is bench-wide)
    # the zone of a `timestamp` without an offset: Frappe v14+ writes UTC
    timestamp_timezone: str = "UTC"
    # first sight of the file: count what it already holds (else start at its end)
    from_start: bool = False

    @field_validator("timestamp_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return _zone_name(value)


def _zone_name(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown timezone '{value}'; use an IANA name such as Europe/Amsterdam"
        ) from None
    return value


class AlertOn(Strict):
    """Which issues of a project raise an alert, through the alert pipeline (decision 21).

    New issues are off by default: the analytics module already announces new issues of the
    production environment (S3, capped per pass); a project that turns `new_issue` on gets
    its own alert at once, in every environment, and analytics leaves its issues alone.
    """

    new_issue: bool = False
    regression: bool = True  # a resolved issue seen again after its resolution
    new_issue_severity: Severity = 3
    regression_severity: Severity = 3
    # an issue first seen longer ago than this (a backfill, an SDK's offline queue) is no news
    new_issue_max_age: Duration = 24 * 3600.0
    # issues of a lower level (a captureMessage is `info`) never alert
    min_level: Level = "error"
    # the alert's component, which groups it into an incident; default: the project's name
    component: str | None = Field(default=None, min_length=1, max_length=limits.NAME)
    # a storm: with this many issue alerts of the component firing, further new issues and
    # regressions join one "and more" alert instead of opening one each
    max_alerts: int = Field(default=20, ge=1, le=1000)

    def wants(self, level: str) -> bool:
        rank = LEVEL_ORDER.index(level) if level in LEVEL_ORDER else LEVEL_ORDER.index("error")
        return rank >= LEVEL_ORDER.index(self.min_level)


class ErrorProject(Strict):
    """`errors.projects.<name>`: settings of one project (projects are made by the CLI)."""

    # only the keys given here replace `errors.alert_on`'s
    alert_on: AlertOn = Field(default_factory=AlertOn)


class ErrorSettings(Strict):
    max_event_bytes: int = Field(default=1 << 20, ge=1024)  # one event, decompressed
    max_envelope_bytes: int = Field(default=20 << 20, ge=1024)  # a whole body, decompressed
    # an event nested deeper is refused with 400, so nothing stored can break a reader
    max_event_depth: int = Field(default=limits.EVENT_DEPTH, ge=8, le=128)
    # answer 429 when this many bytes wait in the spool (the drainer is behind)
    backlog_limit_bytes: int = Field(default=256 << 20, ge=1 << 20)
    retry_after: int = Field(default=30, ge=1)  # seconds, the 429's Retry-After
    retention: Duration = 90 * 86400.0  # events; issues stay
    # what an event keeps in the store (data_json): larger ones lose breadcrumbs, frame
    # variables and long strings first; MariaDB's TEXT holds 64 KiB
    max_stored_event_bytes: int = Field(default=60_000, ge=4096, le=65_000)
    # the URL applications reach this server at, for the DSNs `project add` prints
    # (default: http://server.host:server.port)
    public_url: HttpUrl | None = None
    frappe_error_logs: list[FrappeErrorLog] = Field(default_factory=list)
    frappe_monitor_logs: list[FrappeMonitorLog] = Field(default_factory=list)
    # which issues alert: for every project, and per project by name
    alert_on: AlertOn = Field(default_factory=AlertOn)
    projects: dict[str, ErrorProject] = Field(default_factory=dict)

    def rule_for(self, project: str) -> AlertOn:
        """The project's alert rule: `alert_on` with the keys its own entry sets."""
        own = self.projects.get(project)
        if own is None:
            return self.alert_on
        return self.alert_on.model_copy(update=own.alert_on.model_dump(exclude_unset=True))
