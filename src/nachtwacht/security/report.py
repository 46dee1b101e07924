"""The security report (issue 17, the protocol's `generate_security_report`): what the logs and
the detectors saw in a window, what was blocked, what happened to Nachtwacht itself, and what
changed since the last report.

Decisions:

- Findings are the `security` alerts that fired in the window (fingerprint
  `security:<rule>:<key>`; the rule never holds a colon, the key may: IPv6, `user:<name>`).
- Tallies (`security_tallies`) are per UTC day, so a window reads every day it touches: the
  first may be counted whole. A tally key starting with `/` is a path, `user:` an account,
  `(other)` the fold of keys past the daily cap; anything else is an address. A day's login
  total is the larger of its address rows' sum and its account rows' sum: a log that names
  the account is tallied under both (the same attempts twice), one that does not (a 401 on a
  login URL) under the address only.
- "Since the last report": the baseline is a window of the same length ending at the previous
  `security.report` audit entry (the last generated report), or, with none, the period just
  before this one. A page view or an API read does not count as a report; `record()` does.
- Everything shown comes from attackers' log lines: the report keeps it as data, capped;
  the renderers (`report_render`) escape it.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, defaultdict
from typing import NamedTuple

from sqlalchemy import ColumnElement, Connection, case, func, select

from nachtwacht.auth.audit import audit
from nachtwacht.security.models import DEFAULT_RULES, SecuritySettings
from nachtwacht.security.report_audit import audit_summary
from nachtwacht.security.report_health import health
from nachtwacht.security.report_models import (
    AddressRow,
    BlockRow,
    Changes,
    Count,
    Delta,
    FindingRow,
    LoginDay,
    Logins,
    PathRow,
    Report,
    RuleRow,
    Window,
    cut,
)
from nachtwacht.security.service import BLOCK_FAILED, PREFIX, SOURCE
from nachtwacht.store import tables as t

__all__ = ["Report", "build", "health", "last_report_at", "record"]

DAY = 86400.0
TOP = 20  # rows of each "top" list
LIST = 100  # rows of the findings and blocks lists
NEW_SHOWN = 50  # new addresses named in "what changed"
ACTION = "security.report"
OTHER = "(other)"
EVENT_KINDS = ("failed_login", "refused", "not_found", "rate_limited", "csrf", "probe_path")
LOGIN_KINDS = ("failed_login", "login")
PER_PATH = ("not_found", "probe_path")  # tallied under the path and under the address
IN_FORCE = ("pending", "active", "expiring")


# -- reading -------------------------------------------------------------------------------------


def _split(fingerprint: str) -> tuple[str, str]:
    rest = fingerprint[len(PREFIX) :] if fingerprint.startswith(PREFIX) else fingerprint
    rule, _, key = rest.partition(":")
    return rule, key


class Hit(NamedTuple):
    """A finding as the counts need it (the full row only for the latest `LIST`)."""

    rule: str
    key: str
    severity: int
    fired_at: float


def _findings(conn: Connection, w: Window) -> tuple[list[Hit], list[FindingRow]]:
    """Every finding fired in the window as a `Hit`, newest first, and the latest in full."""
    a = t.alerts.c
    query = (
        select(a.id, a.fingerprint, a.severity, a.fired_at, a.title, a.status)
        .add_columns(a.resolved_at, a.incident_id, a.muted_by)
        # a drill's alert is not a finding: drills stay out of every real statistic
        .where(a.source == SOURCE, a.drill_id.is_(None))
        # a refused block is about our firewall, not a finding about an attacker
        .where(~a.fingerprint.startswith(BLOCK_FAILED, autoescape=True))
        .where(a.fired_at >= w.since, a.fired_at <= w.until)
        .order_by(a.fired_at.desc(), a.id.desc())
    )
    hits: list[Hit] = []
    recent: list[FindingRow] = []
    for r in conn.execute(query):
        rule, key = _split(r[1])
        hit = Hit(cut(rule, 64), cut(key), r[2], r[3])
        hits.append(hit)
        if len(recent) < LIST:
            recent.append(
                FindingRow(
                    alert_id=r[0],
                    rule=hit.rule,
                    key=hit.key,
                    title=cut(r[4], 300),
                    severity=r[2],
                    status=r[5],
                    fired_at=r[3],
                    resolved_at=r[6],
                    incident_id=r[7],
                    muted_by=r[8],
                )
            )
    return hits, recent


Tallies = dict[tuple[str, str], tuple[int, float]]  # (kind, key) -> (n, last_ts)


def _tallies(conn: Connection, w: Window) -> Tallies:
    s = t.security_tallies.c
    query = (
        select(s.kind, s.key, func.sum(s.n), func.max(s.last_ts))
        .where(s.day.in_(w.days))
        .group_by(s.kind, s.key)
    )
    out: Tallies = {}
    for kind, key, n, ts in conn.execute(query):
        # shown as cut: two long keys alike up to the cut are one row
        shown = (kind, cut(key))
        before, last = out.get(shown, (0, 0.0))
        out[shown] = (before + int(n or 0), max(last, float(ts)))
    return out


def is_address(key: str) -> bool:
    return not (key.startswith(("/", "user:")) or key == OTHER)


def _blocks(conn: Connection, where: ColumnElement[bool]) -> tuple[list[BlockRow], int]:
    b = t.security_blocks.c
    total = conn.execute(select(func.count()).select_from(t.security_blocks).where(where)).scalar()
    query = select(t.security_blocks).where(where).order_by(b.created_at.desc(), b.id.desc())
    rows = [
        BlockRow(
            id=r["id"],
            address=cut(r["address"], 64),
            state=r["state"],
            reason=cut(r["reason"], 300),
            created_by=cut(r["created_by"], 120),
            created_at=r["created_at"],
            expires_at=r["expires_at"],
            removed_at=r["removed_at"],
            rule=r["rule"],
            incident_id=r["incident_id"],
        )
        for r in conn.execute(query.limit(LIST)).mappings()
    ]
    return rows, int(total or 0)


def _top(counter: Counter[str]) -> list[Count]:
    return [Count(k, n) for k, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]]


def _login_days(conn: Connection, w: Window) -> dict[str, dict[str, int]]:
    """Per day and kind, the larger of the address rows' and the account rows' sums: a log
    that names the account is tallied under both, one that does not under its address only."""
    s = t.security_tallies.c
    account = case((s.key.startswith("user:"), 1), else_=0)
    query = (
        select(s.day, s.kind, account, func.sum(s.n))
        .where(s.day.in_(w.days), s.kind.in_(LOGIN_KINDS))
        .group_by(s.day, s.kind, account)
    )
    per_day: dict[str, dict[str, int]] = defaultdict(lambda: {"failed_login": 0, "login": 0})
    for day, kind, _, n in conn.execute(query):
        per_day[day][kind] = max(per_day[day][kind], int(n or 0))
    return per_day


def _logins(tallies: Tallies, conn: Connection, w: Window) -> Logins:
    per_day = _login_days(conn, w)
    tops: dict[tuple[str, bool], Counter[str]] = defaultdict(Counter)
    for (kind, key), (n, _) in tallies.items():
        if kind in LOGIN_KINDS and key != OTHER:
            account = key.startswith("user:")
            tops[(kind, account)][key[5:] if account else key] += n
    days = [LoginDay(d, per_day[d]["failed_login"], per_day[d]["login"]) for d in w.days]
    return Logins(
        failed=sum(d.failed for d in days),
        ok=sum(d.ok for d in days),
        per_day=days,
        failed_addresses=_top(tops[("failed_login", False)]),
        failed_accounts=_top(tops[("failed_login", True)]),
        ok_addresses=_top(tops[("login", False)]),
        ok_accounts=_top(tops[("login", True)]),
    )


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _in_force(conn: Connection) -> list[Network]:
    b = t.security_blocks.c
    nets: list[Network] = []
    for (address,) in conn.execute(select(b.address).where(b.state.in_(IN_FORCE))):
        try:
            nets.append(ipaddress.ip_network(address, strict=False))
        except ValueError:
            continue
    return nets


def _mark_blocked(rows: list[AddressRow], nets: list[Network]) -> None:
    """Only for the rows shown: parsing every address of a spray would cost more than the rest."""
    for row in rows:
        try:
            ip = ipaddress.ip_address(row.address)
        except ValueError:
            continue
        row.blocked = any(ip.version == n.version and ip in n for n in nets)


def _addresses(hits: list[Hit], tallies: Tallies) -> dict[str, AddressRow]:
    rows: dict[str, AddressRow] = {}
    for f in hits:
        if is_address(f.key):
            row = rows.get(f.key)
            if row is None:
                row = rows[f.key] = AddressRow(f.key, last_seen=f.fired_at)
            row.findings += 1
            if f.rule not in row.rules:
                row.rules.append(f.rule)
            row.last_seen = max(row.last_seen or 0.0, f.fired_at)
    for (kind, key), (n, ts) in tallies.items():
        if kind in EVENT_KINDS and is_address(key):
            row = rows.get(key)
            if row is None:
                row = rows[key] = AddressRow(key, last_seen=ts)
            row.events += n
            row.last_seen = max(row.last_seen or 0.0, ts)
    return rows


def _paths(tallies: Tallies) -> list[PathRow]:
    paths: dict[str, PathRow] = {}
    for (kind, key), (n, _) in tallies.items():
        if key.startswith("/") and kind != "login":
            row = paths.setdefault(key, PathRow(key, 0, []))
            # one request may be tallied under two kinds (a probe path answered 404): the
            # largest kind is a count of requests that never counts one twice
            row.n = max(row.n, n)
            if kind not in row.kinds:
                row.kinds.append(kind)
    return sorted(paths.values(), key=lambda p: (-p.n, p.path))[:TOP]


# -- the comparison ------------------------------------------------------------------------------


def last_report_at(conn: Connection, now: float) -> float | None:
    a = t.audit_log.c
    return conn.execute(select(func.max(a.ts)).where(a.action == ACTION, a.ts <= now)).scalar()


def _totals(
    findings: list[Hit], tallies: Tallies, logins: Logins, blocks_made: int
) -> dict[str, int]:
    kinds: Counter[str] = Counter()
    for (kind, key), (n, _) in tallies.items():
        # a 404 and a probe path are tallied under the path and under the address: count
        # the paths (and their overflow), like a login's address and not its account
        if not key.startswith("user:") and not (kind in PER_PATH and is_address(key)):
            kinds[kind] += n
    addresses = {f.key for f in findings if is_address(f.key)}
    return {
        "findings": len(findings),
        "offending addresses": len(addresses),
        "failed logins": logins.failed,
        "successful logins": logins.ok,
        "refused (401/403)": kinds["refused"],
        "not found (404)": kinds["not_found"],
        "rate limited (429)": kinds["rate_limited"],
        "CSRF failures": kinds["csrf"],
        "probe paths": kinds["probe_path"],
        "blocks made": blocks_made,
    }


def _changes(
    conn: Connection,
    now: float,
    length: float,
    current: tuple[list[Hit], Tallies, Logins, int],
) -> Changes:
    last = last_report_at(conn, now)
    end = last if last is not None else now - length
    base = Window(end - length, end)
    b = t.security_blocks.c
    made = conn.execute(
        select(func.count())
        .select_from(t.security_blocks)
        .where(b.created_at >= base.since, b.created_at <= base.until)
    ).scalar()
    before_findings, before_tallies = _findings(conn, base)[0], _tallies(conn, base)
    findings, tallies, logins, blocks_made = current

    def seen(fs: list[Hit], ts: Tallies) -> set[str]:
        keys = {f.key for f in fs if is_address(f.key)}
        return keys | {k for (kind, k) in ts if kind in EVENT_KINDS and is_address(k)}

    new = sorted(seen(findings, tallies) - seen(before_findings, before_tallies))
    rules_now = {f.rule for f in findings}
    rules_before = {f.rule for f in before_findings}
    before_logins = _logins(before_tallies, conn, base)
    totals_before = _totals(before_findings, before_tallies, before_logins, int(made or 0))
    totals_now = _totals(findings, tallies, logins, blocks_made)
    return Changes(
        basis="report" if last is not None else "period",
        baseline=base,
        last_report_at=last,
        new_addresses=new[:NEW_SHOWN],
        new_address_count=len(new),
        new_rules=sorted(rules_now - rules_before),
        gone_rules=sorted(rules_before - rules_now),
        deltas=[Delta(k, totals_before[k], totals_now[k]) for k in totals_now],
    )


# -- the report ----------------------------------------------------------------------------------


def build(
    conn: Connection, now: float, days: int = 7, settings: SecuritySettings | None = None
) -> Report:
    """The report of the `days` days up to `now`; reads only (see `record`)."""
    if not 1 <= days <= 366:
        raise ValueError("days must be between 1 and 366")
    length = days * DAY
    w = Window(now - length, now)
    (findings, recent), tallies = _findings(conn, w), _tallies(conn, w)
    b = t.security_blocks.c
    in_force, in_force_count = _blocks(conn, b.state.in_(IN_FORCE))
    made, made_count = _blocks(conn, (b.created_at >= w.since) & (b.created_at <= w.until))
    addresses = _addresses(findings, tallies)
    logins = _logins(tallies, conn, w)
    worst_first = sorted(addresses.values(), key=lambda r: (-r.findings, -r.events, r.address))
    with_findings = [r for r in worst_first if r.findings]
    top = worst_first[:TOP]
    _mark_blocked([*top, *with_findings[:LIST]], _in_force(conn))
    rules: dict[str, RuleRow] = {}
    keys: dict[str, set[str]] = defaultdict(set)
    for f in findings:
        rule = DEFAULT_RULES.get(f.rule)
        row = rules.setdefault(
            f.rule, RuleRow(f.rule, rule.title if rule else f.rule, f.severity, 0, 0)
        )
        row.findings += 1
        row.severity = min(row.severity, f.severity)
        keys[f.rule].add(f.key)
    for name, row in rules.items():
        row.keys = len(keys[name])
    return Report(
        generated_at=now,
        days=days,
        window=w,
        findings=len(findings),
        by_rule=sorted(rules.values(), key=lambda r: (r.severity, -r.findings, r.rule)),
        by_address=with_findings[:LIST],
        address_count=len(with_findings),
        top_addresses=top,
        top_paths=_paths(tallies),
        recent_findings=recent,
        logins=logins,
        blocks_in_force=in_force,
        blocks_in_force_count=in_force_count,
        blocks_made=made,
        blocks_made_count=made_count,
        audit=audit_summary(conn, w),
        changes=_changes(conn, now, length, (findings, tallies, logins, made_count)),
        health=health(conn, settings or SecuritySettings(), now),
    )


def record(conn: Connection, report: Report, actor: str, now: float, fmt: str) -> None:
    """Note that a report was generated: the next one compares with this one's time."""
    detail = {"days": report.days, "format": fmt, "findings": report.findings}
    audit(conn, actor, ACTION, f"{report.days}d", detail, None, now)
