"""What the security detectors read and what they find.

Events come from log lines (`security.parsers`), findings from the detectors
(`security.detectors`); a finding becomes an alert signal in `security.service`.
Times are UTC epoch seconds taken from the log line, not from when the line was read.

Why one module: it is the `security:` section's whole schema (sources, rules, responses)
and the events and findings the detectors pass around; the import contract lets a `models`
module import only other `models` modules, and config composes this one into its schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
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
NEW_NETWORK = "new_network"

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
        # an admin's login from a network (/24, /48) not seen for that account in `window`;
        # threshold unused: one login is enough
        Rule(NEW_NETWORK, "admin login from a new network", 1, 90 * 86400.0, 2, False),
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
    admins: frozenset[str] = frozenset()  # accounts whose new networks are reported


# Debian and Ubuntu name sshd's unit ssh.service, Fedora, Arch and SUSE sshd.service
SSH_UNITS = ("ssh.service", "sshd.service")
UNIT_NAME = re.compile(r"[A-Za-z0-9:_.@\\*?\[\]-]{1,256}")


class Source(BaseModel):
    """A log to watch (`security.sources` in nachtwacht.yaml); nginx is the combined format,
    which Apache writes too."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    kind: Literal["nginx", "nginx_json", "sshd", "nachtwacht", "frappe_activity", "journal"]
    # a log file; for frappe_activity, none: it reads `url`; for nachtwacht, none is
    # `analytics.security_log`; for journal, none: it reads journald through journalctl
    path: str = Field(default="", max_length=4096)
    # journal: the systemd units whose entries are sshd's (journalctl --unit, each)
    units: list[str] = Field(default_factory=lambda: list(SSH_UNITS), min_length=1, max_length=20)
    # journal: a journal directory or file other than the system's (journalctl --directory/--file)
    directory: str = Field(default="", max_length=4096)
    file: str = Field(default="", max_length=4096)
    # frappe_activity: the site's database (mysql+pymysql://user:password@host:3306/db)
    url: str = Field(default="", max_length=2000)
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

    @field_validator("units")
    @classmethod
    def _unit_names(cls, value: list[str]) -> list[str]:
        for unit in value:
            if not UNIT_NAME.fullmatch(unit):
                raise ValueError(
                    f"'{unit[:60]}' is not a systemd unit name (e.g. ssh.service, ssh@*.service)"
                )
        return value

    @model_validator(mode="after")
    def _path_or_url(self) -> Source:
        journal_keys = {"units", "directory", "file"} & self.model_fields_set
        if self.kind == "journal":
            if self.path or self.url:
                raise ValueError(
                    f"source '{self.name}': kind journal reads journald, not a path or url "
                    "(directory: or file: for a journal elsewhere)"
                )
            if self.directory and self.file:
                raise ValueError(f"source '{self.name}': give directory or file, not both")
            return self
        if journal_keys:
            raise ValueError(
                f"source '{self.name}': only kind journal takes {', '.join(sorted(journal_keys))}"
            )
        if self.kind == "frappe_activity":
            if not self.url:
                raise ValueError(
                    f"source '{self.name}': kind frappe_activity reads the site's database: "
                    "give url: mysql+pymysql://user:password@host:3306/db_name"
                )
            if self.path:
                raise ValueError(f"source '{self.name}': kind frappe_activity takes url, not path")
            if not self.url.startswith(("mysql+pymysql://", "mariadb+pymysql://")):
                raise ValueError(
                    f"source '{self.name}': the Activity Log is read from MariaDB: the url "
                    "starts with mysql+pymysql://"
                )
        else:
            # nachtwacht without a path: the security log this very config writes to
            if not self.path and self.kind != "nachtwacht":
                raise ValueError(f"source '{self.name}': kind {self.kind} needs a path")
            if self.url:
                raise ValueError(f"source '{self.name}': only kind frappe_activity takes a url")
        return self


class RuleSetting(BaseModel):
    """`security.rules.<name>`: what to change of a rule; what is left out keeps its default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: int | None = Field(default=None, ge=1, le=100_000)
    window: Duration | None = None
    severity: int | None = Field(default=None, ge=1, le=4)
    enabled: bool = True


class PathSetting(BaseModel):
    """`security.probe_paths` / `login_paths`: `add` to the defaults, or `replace` them.
    A bare list is `add`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    add: list[str] = Field(default_factory=list, max_length=500)
    replace: list[str] | None = Field(default=None, max_length=500)

    @model_validator(mode="before")
    @classmethod
    def _bare_list(cls, value: object) -> object:
        return {"add": value} if isinstance(value, list) else value

    @field_validator("add", "replace")
    @classmethod
    def _paths(cls, value: list[str] | None) -> list[str] | None:
        for path in value or ():
            if not path.startswith("/") or len(path) > 300:
                raise ValueError(f"'{path[:60]}' is not a path: start it with /, at most 300")
        return value

    def over(self, defaults: tuple[str, ...]) -> tuple[str, ...]:
        base = defaults if self.replace is None else tuple(self.replace)
        return tuple(dict.fromkeys((*base, *self.add)))


ADMIN_NAME_MAX = 140


def _network(value: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(
            f"'{value}' is not an IP address or network (e.g. 10.0.0.0/8, 2001:db8::/32)"
        ) from None


class AutoBlock(BaseModel):
    """`security.respond.auto_block`: the rules whose findings block their address by
    themselves (none by default), for how long, and at most how many an hour."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[str] = Field(default_factory=list, max_length=20)
    duration: Duration = 3600.0
    max_per_hour: int = Field(default=100, ge=1, le=10_000)

    @field_validator("rules")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in DEFAULT_RULES:
                raise ValueError(
                    f"unknown rule '{name[:60]}'; the rules are: {', '.join(DEFAULT_RULES)}"
                )
            if name in (FAILED_LOGIN_ACCOUNT, NEW_NETWORK):
                raise ValueError(
                    f"rule '{name}' is keyed by an account, not an address: it cannot block"
                )
        return value


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
    # findings that block their address by themselves (security/autoblock.py); none by default
    auto_block: AutoBlock = Field(default_factory=AutoBlock)

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
        if self.auto_block.rules and not 0 < self.auto_block.duration <= self.max_duration:
            raise ValueError("auto_block.duration must be positive and at most max_duration")
        return self


class SecuritySettings(BaseModel):
    """`security:` in nachtwacht.yaml: the logs to watch, read every `interval`, and the
    responses (`respond`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: list[Source] = Field(default_factory=list, max_length=50)
    interval: Duration = 10.0
    # overrides of the rules' defaults (DEFAULT_RULES), by rule name
    rules: dict[str, RuleSetting] = Field(default_factory=dict)
    probe_paths: PathSetting = Field(default_factory=PathSetting)
    login_paths: PathSetting = Field(default_factory=PathSetting)
    # accounts whose login from a new network is a finding (`new_network`)
    admins: list[str] = Field(default_factory=list, max_length=200)
    # a poll reads at most this much of a source; more waiting is "behind" in /healthz
    max_bytes_per_poll: int = Field(default=20 * 1024 * 1024, ge=4096, le=1024**3)

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, value: dict[str, RuleSetting]) -> dict[str, RuleSetting]:
        for name, setting in value.items():
            if name not in DEFAULT_RULES:
                raise ValueError(
                    f"unknown rule '{name[:60]}'; the rules are: {', '.join(DEFAULT_RULES)}"
                )
            if name == BRUTE_FORCE_SUCCESS and (
                setting.threshold is not None or setting.window is not None
            ):
                raise ValueError(
                    f"rule '{name}' takes no threshold or window: they are failed_login's"
                )
            if name == NEW_NETWORK and setting.threshold is not None:
                raise ValueError(
                    f"rule '{name}' takes no threshold (one login is enough); its window is "
                    "how long a network is remembered"
                )
            if setting.window is not None and setting.window <= 0:
                raise ValueError(f"rule '{name}': the window must be longer than 0")
        return value

    @field_validator("admins")
    @classmethod
    def _admin_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or len(name) > ADMIN_NAME_MAX:
                raise ValueError(f"an admin account name is 1 to {ADMIN_NAME_MAX} characters")
        return value

    def thresholds(self) -> Thresholds:
        """The detectors' settings: the defaults with this file's overrides."""
        rules: dict[str, Rule] = {}
        for name, rule in DEFAULT_RULES.items():
            setting = self.rules.get(name)
            if setting is None:
                rules[name] = rule
                continue
            if not setting.enabled:
                continue
            rules[name] = replace(
                rule,
                threshold=rule.threshold if setting.threshold is None else setting.threshold,
                window=rule.window if setting.window is None else float(setting.window),
                severity=rule.severity if setting.severity is None else setting.severity,
            )
        return Thresholds(
            rules=rules,
            probe_paths=self.probe_paths.over(DEFAULT_PROBE_PATHS),
            login_paths=self.login_paths.over(DEFAULT_LOGIN_PATHS),
            admins=frozenset(self.admins),
        )

    # responses: address blocks and the HTTP lockdown in nftables
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
    addr: str = ""  # the address of the login that made it (compromise, new network)
