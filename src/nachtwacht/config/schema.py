"""The schema of nachtwacht.yaml. Every key but `probes` has a default."""

from __future__ import annotations

import hashlib
import re
from datetime import date, time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from nachtwacht.alerts.models import Window
from nachtwacht.analytics.models import AnalyticsSettings
from nachtwacht.auth.models import AuthSettings
from nachtwacht.backup.models import BackupSettings
from nachtwacht.config import limits
from nachtwacht.drills.models import DrillSettings
from nachtwacht.durations import Duration
from nachtwacht.errors.models import ErrorSettings
from nachtwacht.evidence.models import EvidenceSettings
from nachtwacht.incidents.models import IncidentSettings
from nachtwacht.notify.models import NotifySettings
from nachtwacht.oncall.models import PeopleSettings
from nachtwacht.probes.base import ProbeConfig
from nachtwacht.probes.registry import config_union
from nachtwacht.reviews.models import ReviewSettings
from nachtwacht.runbooks.models import RunbookSettings
from nachtwacht.security.models import SecuritySettings
from nachtwacht.spool.models import SpoolSettings
from nachtwacht.statuspage.models import StatusPageSettings
from nachtwacht.watchdog.models import WatchdogSettings

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# named, not a lambda: mypy infers a lambda's list as list[str], not list[Weekday]
def _weekdays() -> list[Weekday]:
    return ["mon", "tue", "wed", "thu", "fri"]


class BusinessHours(Strict):
    days: list[Weekday] = Field(default_factory=_weekdays)
    start: time = time(9, 0)
    end: time = time(17, 0)
    holidays: list[date] = Field(default_factory=list)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time_of_day(cls, value: Any) -> Any:
        # pydantic reads a number as seconds since midnight in UTC: `end: 1020` is no time of
        # day anyone means, and an aware time cannot be compared with the naive default
        if isinstance(value, bool | int | float):
            raise ValueError("must be a time of day such as 17:00")
        if isinstance(value, str) and re.fullmatch(r"\d:\d\d(:\d\d)?", value.strip()):
            return "0" + value.strip()  # 7:30 as people write it
        return value

    @field_validator("start", "end")
    @classmethod
    def _no_zone(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("must be a time of day without a zone; `timezone` says which")
        return value

    @model_validator(mode="after")
    def _order(self) -> BusinessHours:
        if self.end <= self.start:
            # the loader points "end ..." at the `end` key
            raise ValueError(f"end must be after start ({self.start:%H:%M})")
        return self


class StoreSettings(Strict):
    url: str = "sqlite:///data/nachtwacht.db"

    @field_validator("url")
    @classmethod
    def _known_dialect(cls, value: str) -> str:
        allowed = ("sqlite:///", "postgresql+psycopg://", "mysql+pymysql://")
        if not value.startswith(allowed):
            raise ValueError(
                "store url must start with sqlite:///, postgresql+psycopg:// or mysql+pymysql://"
            )
        return value


class ServerSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    # set the Secure flag on session cookies even when the request arrives over plain HTTP
    # (behind a TLS-terminating proxy)
    secure_cookies: bool = False
    # Slow and idle clients (docs/security.md, decision 17): each holds a descriptor, and a
    # few hundred that never finish must not starve the spool, the store and /healthz.
    header_timeout: Duration = Field(default=10.0, gt=0)
    body_timeout: Duration = Field(default=15.0, gt=0)
    body_min_rate: int = Field(default=500, ge=0)  # bytes/s after body_timeout; 0: no check
    keep_alive_timeout: Duration = Field(default=5.0, gt=0)
    # None: derived from the descriptor limit (RLIMIT_NOFILE), keeping a reserve
    max_connections: int | None = Field(default=None, ge=1)
    # request bodies larger than these are refused with 413 before they are read
    # (web/bodies.py; Sentry's endpoints use errors.max_envelope_bytes instead)
    max_body_bytes: int = Field(default=limits.BODY_BYTES, ge=4 * limits.KIB, le=64 * limits.MIB)
    # a post-incident review or an edited notification
    max_document_bytes: int = Field(
        default=limits.DOCUMENT_BYTES, ge=4 * limits.KIB, le=64 * limits.MIB
    )
    # an Alertmanager notification (a whole group of alerts)
    max_webhook_bytes: int = Field(
        default=limits.WEBHOOK_BYTES, ge=4 * limits.KIB, le=256 * limits.MIB
    )
    # JSON nested deeper than this is refused with 422 before it is parsed
    max_json_depth: int = Field(default=limits.JSON_DEPTH, ge=4, le=128)
    # the server's own name among probe `locations:` (decision 25): a probe listing it runs here
    location: str = Field(
        default="local", min_length=1, max_length=32, pattern=r"^[a-z0-9][a-z0-9_.-]*$"
    )
    # an agent that has not reported for this long raises "agent X silent", and its location's
    # results count as unknown (never as down) until it reports again
    agent_silent_after: Duration = Field(default=120.0, ge=10.0)


class EngineSettings(Strict):
    max_concurrency: int = Field(default=1000, ge=1, le=100_000)
    flush_interval: Duration = 1.0
    startup_spread: Duration = 25.0


class RetentionSettings(Strict):
    raw: Duration = 2 * 86400.0
    minute: Duration = 14 * 86400.0
    hour: Duration = 400 * 86400.0
    state_changes: Duration = 400 * 86400.0


class Component(Strict):
    name: str = Field(min_length=1)
    description: str = ""


class Settings(Strict):
    site: str = "nachtwacht"
    timezone: str = "Europe/Amsterdam"
    business_hours: BusinessHours = Field(default_factory=BusinessHours)
    store: StoreSettings = Field(default_factory=StoreSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    components: list[Component] = Field(default_factory=list)
    people: PeopleSettings = Field(default_factory=PeopleSettings)
    incidents: IncidentSettings = Field(default_factory=IncidentSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    maintenance: list[Window] = Field(default_factory=list)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    errors: ErrorSettings = Field(default_factory=ErrorSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    analytics: AnalyticsSettings = Field(default_factory=AnalyticsSettings)
    runbooks: RunbookSettings = Field(default_factory=RunbookSettings)
    evidence: EvidenceSettings = Field(default_factory=EvidenceSettings)
    reviews: ReviewSettings = Field(default_factory=ReviewSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    watchdog: WatchdogSettings = Field(default_factory=WatchdogSettings)
    drills: DrillSettings = Field(default_factory=DrillSettings)
    status_page: StatusPageSettings = Field(default_factory=StatusPageSettings)
    probes: list[Annotated[ProbeConfig, Any]] = Field(default_factory=list)
    # values the loader took from the environment or files (`${VAR}`, `*_file:`): secret
    # wherever they appear, whatever field they went into (nachtwacht.config.redact)
    _sourced: frozenset[str] = PrivateAttr(default_factory=frozenset)
    # what nachtwacht.config.redact computed for this object, kept because settings never change
    _redaction: Any = PrivateAttr(default=None)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown timezone '{value}'; use an IANA name such as Europe/Amsterdam"
            ) from None
        return value

    @field_validator("components", mode="before")
    @classmethod
    def _components_as_mapping(cls, value: Any) -> Any:
        # `components: {db: "MariaDB"}` is the short form of a list of {name, description}.
        if isinstance(value, dict):
            return [{"name": k, "description": v or ""} for k, v in value.items()]
        return value

    @model_validator(mode="after")
    def _public_url(self) -> Settings:
        # an ack link must point at this server, whatever port it was moved to
        if not self.incidents.public_url:
            host = self.server.host
            if host in ("0.0.0.0", "::", ""):
                host = "127.0.0.1"
            elif ":" in host:
                host = f"[{host}]"
            url = f"http://{host}:{self.server.port}"
            object.__setattr__(self.incidents, "public_url", url)
        return self

    @model_validator(mode="after")
    def _references(self) -> Settings:
        # One "probes[i].key: message" line per mistake; the loader splits them into problems.
        problems: list[str] = []
        names: dict[str, int] = {}
        for index, probe in enumerate(self.probes):
            if probe.name in names:
                problems.append(
                    f"probes[{index}].name: '{probe.name}' is already used by "
                    f"probes[{names[probe.name]}]"
                )
            else:
                names[probe.name] = index
        tokens: dict[str, int] = {}
        for index, probe in enumerate(self.probes):
            token = getattr(probe, "token", None)
            if probe.kind == "heartbeat" and token is not None:
                if token in tokens:
                    problems.append(
                        f"probes[{index}].token: already used by probes[{tokens[token]}]; "
                        "each heartbeat needs its own token"
                    )
                else:
                    tokens[token] = index
            if probe.kind == "heartbeat" and probe.locations:
                # a heartbeat is pinged at the server: there is nothing for an agent to check
                problems.append(f"probes[{index}].locations: a heartbeat has no locations")
            for dep in probe.depends_on:
                if dep == probe.name:
                    problems.append(f"probes[{index}].depends_on: a probe cannot depend on itself")
                elif dep not in names:
                    problems.append(f"probes[{index}].depends_on: no probe is named '{dep}'")
        problems.extend(self._target_problems())
        problems.extend(self._status_page_problems())
        if self.backup.heartbeat is not None and self.backup.heartbeat not in tokens:
            problems.append(
                "backup.heartbeat: no heartbeat probe has this token; add one so a backup "
                "that stops running raises an alert"
            )
        for section in ("frappe_error_logs", "frappe_monitor_logs"):
            seen: set[str] = set()
            for index, source in enumerate(getattr(self.errors, section)):
                if source.name in seen:
                    problems.append(
                        f"errors.{section}[{index}].name: '{source.name}' is already used"
                    )
                seen.add(source.name)
        for index, window in enumerate(self.maintenance):
            for name in window.probes:
                if name not in names:
                    problems.append(f"maintenance[{index}].probes: no probe is named '{name}'")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _target_problems(self) -> list[str]:
        """Escalation targets must name contacts, rotations, channels that exist."""
        known = {
            "contact": {c.id for c in self.people.contacts},
            "oncall": {r.name for r in self.people.rotations},
            "external": {e.id for e in self.people.external}
            | {e.kind for e in self.people.external},
            "channel": set(self.notify.channels),
        }
        problems = []
        for name, policy in self.incidents.policies.items():
            for i, step in enumerate(policy.steps):
                for target in step.notify:
                    kind, _, ref = target.partition(":")
                    if ref and kind in known and ref not in known[kind]:
                        problems.append(
                            f"incidents.policies.{name}.steps[{i}].notify: '{target}': "
                            f"no {kind} named '{ref}'"
                        )
        return problems

    def _status_page_problems(self) -> list[str]:
        """The public components name real components; subscriber channels exist."""
        page = self.status_page
        known = set(self.component_names())
        problems = [
            f"status_page.components.{public}: no probe or component is named '{name}'"
            for public, names in page.components.items()
            for name in names
            if name not in known
        ]
        for key, kind in (("email_channel", "email"), ("webhook_channel", "webhook")):
            name = getattr(page, key)
            if name is None:
                continue
            channel = self.notify.channels.get(name)
            if channel is None or channel.kind != kind:
                problems.append(f"status_page.{key}: no {kind} channel is named '{name}'")
        return problems

    @property
    def data_dir(self) -> Path:
        """Where Nachtwacht keeps files: beside the SQLite file, else ./data."""
        url = self.store.url
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            return Path(url.removeprefix("sqlite:///")).parent
        return Path("data")

    @property
    def spool_dir(self) -> Path:
        if self.spool.dir is not None:
            return self.spool.dir
        if self.store.url.startswith("sqlite:///"):
            return self.data_dir / "spool"
        # one spool per store: its cursor lives in that store
        digest = hashlib.sha256(self.store.url.encode()).hexdigest()[:12]
        return self.data_dir / f"spool-{digest}"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def component_names(self) -> list[str]:
        seen = [c.name for c in self.components]
        for probe in self.probes:
            if probe.component not in seen:
                seen.append(probe.component)
        return seen


def settings_model() -> type[Settings]:
    """Settings with `probes` typed as the discriminated union of every registered kind."""
    union = config_union()
    return _build(union)


_cache: dict[int, type[Settings]] = {}


def _build(union: Any) -> type[Settings]:
    key = id(union)
    if key not in _cache:
        from pydantic import create_model

        _cache[key] = create_model(
            "NachtwachtConfig",
            __base__=Settings,
            probes=(list[union], Field(default_factory=list)),
        )
    return _cache[key]
