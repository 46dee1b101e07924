"""What the security detectors read and what they find.

Events come from log lines (`security.parsers`), findings from the detectors
(`security.detectors`); a finding becomes an alert signal in `security.service`.
Times are UTC epoch seconds taken from the log line, not from when the line was read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nachtwacht.durations import Duration


@dataclass(frozen=True, slots=True)
class AccessEvent:
    """One request from a web server's access log (nginx/Apache combined, or nginx JSON)."""

    ts: float
    addr: str
    method: str
    path: str  # as requested, query string included
    status: int
    user_agent: str = ""
    user: str = ""  # the authenticated user the server logged ("-" becomes "")


@dataclass(frozen=True, slots=True)
class LoginEvent:
    """A login attempt: sshd's auth.log, or a login endpoint seen in an access log."""

    ts: float
    addr: str
    user: str  # "" when the log does not name the account
    ok: bool


@dataclass(frozen=True, slots=True)
class CsrfEvent:
    """A request refused for a missing or wrong CSRF token (no parser yields it yet)."""

    ts: float
    addr: str


Event = AccessEvent | LoginEvent | CsrfEvent


@dataclass(frozen=True, slots=True)
class Rule:
    """`threshold` events of one key within `window` seconds (the ends included) fire."""

    name: str
    title: str
    threshold: int
    window: float
    severity: int  # 1 (worst) .. 4, the alert's and the incident's
    resolves: bool = True  # a cleared finding resolves its alert; a compromise waits for a human


# The original thresholds (issue 17), each configurable through `Thresholds`.
FAILED_LOGIN = "failed_login"
FAILED_LOGIN_ACCOUNT = "failed_login_account"
UNAUTHORIZED = "unauthorized"
CSRF = "csrf"
RATE_LIMIT = "rate_limit"
SCANNER_404 = "scanner_404"
PROBE_PATHS = "probe_paths"
BRUTE_FORCE_SUCCESS = "brute_force_success"

DEFAULT_RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule(FAILED_LOGIN, "failed logins from one address", 5, 1800.0, 2),
        Rule(FAILED_LOGIN_ACCOUNT, "failed logins for one account", 5, 1800.0, 2),
        Rule(UNAUTHORIZED, "401/403 storm from one address", 3, 300.0, 3),
        Rule(CSRF, "CSRF failures from one address", 5, 900.0, 3),
        Rule(RATE_LIMIT, "rate limit (429) violations from one address", 10, 3600.0, 3),
        Rule(SCANNER_404, "404 storm from one address (scanner)", 20, 300.0, 3),
        Rule(PROBE_PATHS, "known probe paths requested (scanner)", 3, 300.0, 3),
        # threshold and window are the failed-login rule's: a success after that many
        # failures within that window is a likely compromise
        Rule(BRUTE_FORCE_SUCCESS, "likely compromise: login after failures", 5, 1800.0, 1, False),
    )
}

DEFAULT_PROBE_PATHS: tuple[str, ...] = (
    "/.env",
    "/.git/",
    "/.aws/",
    "/.ssh/",
    "/.htpasswd",
    "/wp-login.php",
    "/wp-admin",
    "/xmlrpc.php",
    "/phpmyadmin",
    "/pma/",
    "/admin.php",
    "/config.php",
    "/server-status",
    "/vendor/phpunit/",
    "/cgi-bin/",
    "/actuator/",
    "/boaform/",
)

# Frappe's login endpoint: a 401 there is a failed login, a 200 a successful one
DEFAULT_LOGIN_PATHS: tuple[str, ...] = ("/api/method/login",)


@dataclass(frozen=True)
class Thresholds:
    """The detectors' settings: the rules (overrides by name), probe and login paths."""

    rules: dict[str, Rule] = field(default_factory=lambda: dict(DEFAULT_RULES))
    probe_paths: tuple[str, ...] = DEFAULT_PROBE_PATHS
    login_paths: tuple[str, ...] = DEFAULT_LOGIN_PATHS
    max_keys: int = 200_000  # per rule; beyond it the oldest key is forgotten


class Source(BaseModel):
    """A log to watch (`security.sources` in nachtwacht.yaml); nginx is the combined format,
    which Apache writes too."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    kind: Literal["nginx", "nginx_json", "sshd"]
    path: str = Field(min_length=1, max_length=4096)
    from_start: bool = False  # first sight of the file: read what it holds (else from its end)
    # the zone of sshd's classic syslog times (`Dec  8 03:10:00`), which carry no offset
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown timezone '{value}'; use an IANA name such as Europe/Amsterdam"
            ) from None
        return value


def _network(value: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(
            f"'{value}' is not an IP address or network (e.g. 10.0.0.0/8, 2001:db8::/32)"
        ) from None


class RespondSettings(BaseModel):
    """`security.respond`: blocking addresses and the HTTP lockdown in nftables (decision 26).

    Off by default: changing a firewall is something an operator turns on, knowing that
    `nachtwacht serve` then needs CAP_NET_ADMIN (root, or the capability) to run `nft`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    nft: str = Field("nft", min_length=1, max_length=4096)  # the binary, or its path
    # run nft inside this network namespace (`ip netns exec NAME nft ...`); tests use it
    netns: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    default_duration: Duration = 3600.0
    max_duration: Duration = 7 * 86400.0
    # never blocked, and always let through a lockdown (besides loopback and this host)
    allow: list[str] = Field(default_factory=list, max_length=100)
    interval: Duration = 5.0  # how often pending blocks are applied and expired ones removed
    reconcile_interval: Duration = 60.0  # how often the firewall is compared with the store

    @field_validator("allow")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        return [_network(v) for v in values]

    @model_validator(mode="after")
    def _bounds(self) -> RespondSettings:
        if self.default_duration <= 0 or self.max_duration <= 0:
            raise ValueError("default_duration and max_duration must be positive")
        if self.default_duration > self.max_duration:
            raise ValueError("default_duration may not be longer than max_duration")
        if self.interval <= 0:
            raise ValueError("interval must be positive")
        return self


class SecuritySettings(BaseModel):
    """`security:` in nachtwacht.yaml: the logs to watch, read every `interval`, and the
    responses (`respond`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: list[Source] = Field(default_factory=list, max_length=50)
    interval: Duration = 10.0
    respond: RespondSettings = Field(default_factory=RespondSettings)

    @model_validator(mode="after")
    def _unique_names(self) -> SecuritySettings:
        seen: set[str] = set()
        for index, source in enumerate(self.sources):
            if source.name in seen:
                raise ValueError(f"sources[{index}].name: '{source.name}' is already used")
            seen.add(source.name)
        return self


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule's condition started to hold for `key` (firing) or no longer holds (cleared)."""

    rule: str
    key: str  # the address, or "user:<name>" for a per-account rule
    firing: bool
    ts: float  # the event that made it fire, or the sweep that cleared it
    first_ts: float  # the oldest event counted in the window
    count: int
    severity: int
    title: str
