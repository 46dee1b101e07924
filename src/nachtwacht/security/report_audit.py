"""Nachtwacht's own audit log in the security report: the window's entries by group and by
action, and the latest notable ones (failed logins, user and role changes, tokens and keys)."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import Connection, func, select

from nachtwacht.security.report_models import AuditRow, AuditSummary, Count, Window, cut
from nachtwacht.store import tables as t

TOP = 20  # notable entries shown
# audit actions by what a reader looks for; the first matching prefix wins
AUDIT_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logins", ("login.success",)),
    (
        "failed logins",
        ("login.", "user.passwd.failed", "user.passwd.locked", "user.locked"),
    ),
    ("sessions", ("logout", "session.")),
    ("users and roles", ("user.",)),
    ("tokens and keys", ("token.", "ingest_key.", "agent_token.", "api_token.")),
    ("security", ("security.",)),
    ("flags", ("flag.",)),
    ("API changes", ("api.",)),
)
NOTABLE = ("failed logins", "users and roles", "tokens and keys", "security", "flags")


def audit_summary(conn: Connection, w: Window) -> AuditSummary:
    a = t.audit_log.c
    in_window = (a.ts >= w.since, a.ts <= w.until)
    counts = conn.execute(select(a.action, func.count()).where(*in_window).group_by(a.action))
    by_action = sorted((Count(name, int(n)) for name, n in counts), key=lambda c: (-c.n, c.name))
    groups: Counter[str] = Counter()
    for c in by_action:
        groups[group_of(c.name)] += c.n
    notable_actions = [c.name for c in by_action if group_of(c.name) in NOTABLE]
    notable = [
        AuditRow(r.ts, cut(r.actor, 120), r.action, cut(r.target, 300), r.ip or "")
        for r in conn.execute(
            select(a.ts, a.actor, a.action, a.target, a.ip)
            .where(*in_window, a.action.in_(notable_actions))
            .order_by(a.ts.desc(), a.id.desc())
            .limit(TOP)
        )
    ]
    return AuditSummary(
        total=sum(c.n for c in by_action),
        by_group=[Count(name, groups[name]) for name, _ in AUDIT_GROUPS if groups[name]]
        + ([Count("other", groups["other"])] if groups["other"] else []),
        by_action=by_action,
        notable=notable,
    )


def group_of(action: str) -> str:
    for name, prefixes in AUDIT_GROUPS:
        if action.startswith(prefixes):
            return name
    return "other"
