"""Config models of `errors:` in nachtwacht.yaml.

Spool record kind `error_event`: orjson of
    {"project_id": int, "received_at": float, "event": {<Sentry event payload>}}
The Sentry endpoints, the JSON endpoint and the Frappe Error Log poller all produce it; the
drainer's handler (errors/service.py) groups and stores it. `event["event_id"]` is 32 hex
digits; a source that re-reads the same error (the Frappe poller after a restart) derives it
deterministically, so the `(project_id, event_id)` uniqueness deduplicates.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from nachtwacht.durations import Duration


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FrappeErrorLog(Strict):
    """Poll a Frappe site's Error Log doctype over its REST API (token auth)."""

    name: str = Field(min_length=1)
    url: HttpUrl  # the site, e.g. https://erp.example.com
    api_key: str
    api_secret: str
    project: str  # the Nachtwacht project its errors go to (`nachtwacht project add`)
    interval: Duration = 60.0
    environment: str = "production"
    timeout: Duration = 20.0


class FrappeMonitorLog(Strict):
    """Tail a bench's logs/monitor.json.log for request latency and status codes."""

    name: str = Field(min_length=1)
    path: str
    interval: Duration = 15.0


class ErrorSettings(Strict):
    max_event_bytes: int = Field(default=1 << 20, ge=1024)  # one event, decompressed
    max_envelope_bytes: int = Field(default=20 << 20, ge=1024)  # a whole body, decompressed
    # answer 429 when this many bytes wait in the spool (the drainer is behind)
    backlog_limit_bytes: int = Field(default=256 << 20, ge=1 << 20)
    retry_after: int = Field(default=30, ge=1)  # seconds, the 429's Retry-After
    retention: Duration = 90 * 86400.0  # events; issues stay
    frappe_error_logs: list[FrappeErrorLog] = Field(default_factory=list)
    frappe_monitor_logs: list[FrappeMonitorLog] = Field(default_factory=list)
