"""Blocks asked for by findings themselves (`security.respond.auto_block`), off by default.

At 3 a.m. a brute force should not wait for a person to type `security block`: for the rules
listed, a firing finding keyed by an address writes a pending block in the transaction that
records the finding (the obligation is a row, applied by the `security-respond` module within
its interval, and on the incident's timeline once nftables took it). Refused quietly (logged):
an address on the allow-list, loopback or this host, one already blocked, a finding a silence
or a maintenance window mutes (muting a rule's alert is how an office address is let be).
At most `max_per_hour` automatic blocks an hour: a spray from thousands of addresses is for a
person and the lockdown, not for an nftables set growing without bound.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import Connection, func, select

from nachtwacht.alerts.service import Outcome
from nachtwacht.config.schema import Settings
from nachtwacht.security import blocks
from nachtwacht.security.models import Finding
from nachtwacht.store import tables as t

log = logging.getLogger(__name__)
ACTOR = "nachtwacht"


def _made_last_hour(conn: Connection, now: float) -> int:
    c = t.security_blocks.c
    return int(
        conn.execute(
            select(func.count()).where(
                c.created_by == ACTOR,
                c.created_at > now - 3600.0,
                c.rule.is_not(None),
                c.rule.not_in(blocks.LOCKDOWN_RULES),
            )
        ).scalar_one()
    )


def request_blocks(
    conn: Connection,
    settings: Settings,
    findings: Sequence[Finding],
    outcomes: Sequence[Outcome],
    now: float,
) -> list[int]:
    """Pending blocks for this poll's findings, in the caller's transaction; their ids."""
    respond = settings.security.respond
    auto = respond.auto_block
    if not respond.enabled or not auto.rules:
        return []
    made: list[int] = []
    budget = auto.max_per_hour - _made_last_hour(conn, now)
    for finding, outcome in zip(findings, outcomes, strict=True):
        if not finding.firing or finding.rule not in auto.rules or finding.key.startswith("user:"):
            continue
        if outcome.muted_by is not None or outcome.alert_id is None:
            continue
        if budget <= 0:
            log.warning(
                "security.respond.auto_block: %d blocks in the last hour; %s not blocked",
                auto.max_per_hour,
                finding.key,
            )
            break
        try:
            block_id = blocks.block(
                conn,
                respond,
                finding.key,
                duration=auto.duration,
                reason=f"automatic: {finding.title}",
                actor=ACTOR,
                now=now,
                incident_id=outcome.incident_id,
                rule=finding.rule,
            )
        except blocks.BlockError as exc:
            log.info("not blocked automatically: %s", exc)
            continue
        made.append(block_id)
        budget -= 1
    return made
