"""What the security report holds (`security.report` builds it, `security.report_render` shows
it). Strings that came from log lines are cut (`cut`) before they go in."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

CUT = 200  # characters of any string that came from a log line

# control characters, and the bidirectional overrides that make a shown string read
# differently from what it is ("Trojan Source")
UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def cut(text: str | None, limit: int = CUT) -> str:
    """A string from a log line as it may be shown: no control characters, at most `limit`."""
    if not text:
        return ""
    if len(text) <= limit and text.isprintable():  # the usual case, without the regex
        return text
    text = UNSHOWABLE.sub("\ufffd", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Window:
    since: float
    until: float

    @property
    def days(self) -> list[str]:
        """The UTC days (YYYY-MM-DD) the window touches."""
        first = datetime.fromtimestamp(self.since, UTC).date()
        last = datetime.fromtimestamp(self.until, UTC).date()
        return [(first + timedelta(d)).isoformat() for d in range((last - first).days + 1)]


@dataclass
class Count:
    name: str
    n: int


@dataclass
class RuleRow:
    rule: str
    title: str
    severity: int
    findings: int
    keys: int


@dataclass
class AddressRow:
    address: str
    findings: int = 0
    rules: list[str] = field(default_factory=list)
    events: int = 0  # tallied events (refused, 404, failed logins, ...)
    last_seen: float | None = None
    blocked: bool = False


@dataclass
class PathRow:
    path: str
    n: int
    kinds: list[str]


@dataclass
class FindingRow:
    alert_id: int
    rule: str
    key: str
    title: str
    severity: int
    status: str
    fired_at: float
    resolved_at: float | None
    incident_id: int | None
    muted_by: str | None


@dataclass
class LoginDay:
    day: str
    failed: int
    ok: int


@dataclass
class Logins:
    failed: int
    ok: int
    per_day: list[LoginDay]
    failed_addresses: list[Count]
    failed_accounts: list[Count]
    ok_addresses: list[Count]
    ok_accounts: list[Count]


@dataclass
class BlockRow:
    id: int
    address: str
    state: str
    reason: str
    created_by: str
    created_at: float
    expires_at: float | None
    removed_at: float | None
    rule: str | None
    incident_id: int | None


@dataclass
class AuditRow:
    ts: float
    actor: str
    action: str
    target: str
    ip: str


@dataclass
class AuditSummary:
    total: int
    by_group: list[Count]
    by_action: list[Count]
    notable: list[AuditRow]


@dataclass
class Delta:
    name: str
    before: int
    now: int


@dataclass
class Changes:
    basis: str  # "report": since the last report; "period": the previous period
    baseline: Window
    last_report_at: float | None
    new_addresses: list[str]
    new_address_count: int
    new_rules: list[str]
    gone_rules: list[str]
    deltas: list[Delta]


@dataclass
class SourceLag:
    name: str
    path: str
    behind_bytes: int | None  # None: unknown (not read yet, rotated, unreadable)
    note: str


@dataclass
class Health:
    state: str  # off | waiting | ok | failing | behind
    interval: float
    last_tick: float | None
    last_ok: float | None
    last_error: str | None
    last_error_at: float | None
    consecutive_errors: int
    sources: list[SourceLag]


@dataclass
class Report:
    generated_at: float
    days: int
    window: Window
    findings: int
    by_rule: list[RuleRow]
    by_address: list[AddressRow]  # every address with a finding, most findings first (capped)
    address_count: int
    top_addresses: list[AddressRow]
    top_paths: list[PathRow]
    recent_findings: list[FindingRow]
    logins: Logins
    blocks_in_force: list[BlockRow]
    blocks_in_force_count: int
    blocks_made: list[BlockRow]
    blocks_made_count: int
    audit: AuditSummary
    changes: Changes
    health: Health
