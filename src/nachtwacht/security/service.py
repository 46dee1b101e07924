"""Findings → the alert pipeline (`alerts.service.process`): dedup, muting, incidents, paging.

A finding is a signal with the fingerprint `security:<rule>:<key>`: one alert per rule and
address (or account) however often the detector sees it, maintenance windows and silences
apply as to any alert, and the severity is the rule's. A likely compromise (brute-force
success) is severity 1, so it opens an S1 incident. All alerts join the component `security`,
so a scan from many addresses is one incident.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import Connection

from nachtwacht.alerts import service as pipeline
from nachtwacht.alerts.service import Outcome, Signal
from nachtwacht.config.schema import Settings
from nachtwacht.security.models import BRUTE_FORCE_SUCCESS, Finding

SOURCE = "security"
COMPONENT = "security"
PREFIX = "security:"
# a block the firewall refused (security/respond_engine.py): an alert, but not a finding
BLOCK_FAILED = f"{PREFIX}block_failed:"
MAX_KEY = 120  # of the fingerprint's key part (the column holds 200); keys come from log lines


def short_key(key: str) -> str:
    """`key`, or for a long one (a user name an attacker chose) a cut that stays distinct."""
    if len(key) <= MAX_KEY:
        return key
    return f"{key[: MAX_KEY - 17]}~{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def fingerprint(rule: str, key: str) -> str:
    return f"{PREFIX}{rule}:{short_key(key)}"


def signal_for(finding: Finding, now: float | None = None) -> Signal:
    """The finding as an alert; `now` (when the watch read it) is its detection time."""
    who = short_key(finding.key)
    span = max(0.0, finding.ts - finding.first_ts)
    message = (
        f"{finding.count} events from {who} within {span:.0f} s"
        if finding.firing
        else f"no more events from {who}"
    )
    if finding.firing and finding.rule == BRUTE_FORCE_SUCCESS:
        # the page's Impact line: say what happened (the window keeps the threshold's last
        # failures, so the count is a floor, not the attack's size)
        after = f"after {finding.count} or more failed logins"
        if who.startswith("user:"):
            at = f" from {short_key(finding.addr)}" if finding.addr else ""
            message = f"a login of {who[5:]}{at} {after} of that account within {span:.0f} s"
        else:
            message = f"a login from {who} {after} from that address within {span:.0f} s"
    return Signal(
        fingerprint=fingerprint(finding.rule, finding.key),
        source=SOURCE,
        title=f"{finding.title}: {who}",
        component=COMPONENT,
        severity=finding.severity,
        firing=finding.firing,
        started_at=finding.first_ts,
        # detected when read, as an external alert is when it arrives: a backlog (a first
        # read from_start, a restart, a watch behind its log) must not open an incident
        # whose response target passed before anyone could know, paging up the matrix at once
        detected_at=finding.ts if now is None else now,
        message=message,
        labels={"rule": finding.rule, "key": who},
    )


def record(
    conn: Connection, settings: Settings, findings: Iterable[Finding], now: float
) -> list[Outcome]:
    """Every finding through the pipeline in the caller's transaction (one for the batch);
    the outcomes in the findings' order.

    The worst first: a poll that holds a scanner's S3 and a likely compromise opens the
    incident as the S1 it is, and its first page says so (opened by the S3 and raised in the
    same transaction, the page already queued would say "S3 Medium", named after the
    scanner). The sort is stable, so one key's cleared and firing findings keep their order.
    """
    batch = list(findings)
    order = sorted(range(len(batch)), key=lambda i: batch[i].severity)
    outcomes: dict[int, Outcome] = {}
    for i in order:
        outcomes[i] = pipeline.process(conn, settings, signal_for(batch[i], now), now)
    return [outcomes[i] for i in range(len(batch))]
