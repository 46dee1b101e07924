"""Engine wiring: the `security-respond` module keeps nftables in step with `security_blocks`.

Installed whenever `security.respond.enabled` is on (whether or not logs are watched): every
`security.respond.interval` it applies pending blocks and removes those whose time is up; at
its first tick, and every `reconcile_interval` after, it re-applies active blocks the firewall
lost (a reboot empties nftables) and removes elements no block accounts for. A firewall that
refuses shows in the module's health (/healthz, `nachtwacht status`) while the refused block
would still be in force (or until it is unblocked), and on the block's incident's timeline;
each such block is also an alert (`security:block_failed:<id>`, severity 2), raised every
interval while it holds (deduplicated) and resolved once the block is unblocked, expired or
applied: a responder who believes an attacker is blocked must be told when they are not.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from nachtwacht.alerts import service as pipeline
from nachtwacht.alerts.service import Signal
from nachtwacht.config.schema import Settings
from nachtwacht.security.applier import Applier, Pass
from nachtwacht.security.blocks import failed_blocks, firewall_for
from nachtwacht.security.service import BLOCK_FAILED
from nachtwacht.store import tables as t

if TYPE_CHECKING:
    from nachtwacht.engine.runtime import Runtime

MODULE = "security-respond"
FAILED = BLOCK_FAILED


def alert_failed_blocks(
    conn: Connection, settings: Settings, failed: list[dict[str, Any]], now: float
) -> int:
    """Raise an alert per refused block still meant to be in force; resolve the others'.
    Returns how many messages were queued."""
    a = t.alerts.c
    firing = set(
        conn.execute(
            select(a.fingerprint).where(
                a.status == "firing", a.fingerprint.startswith(FAILED, autoescape=True)
            )
        ).scalars()
    )
    queued = 0
    wanted: set[str] = set()
    for f in failed:
        fingerprint = f"{FAILED}{f['id']}"
        wanted.add(fingerprint)
        signal = Signal(
            fingerprint=fingerprint,
            source="security",
            title=f"the firewall refused the block of {f['address']}",
            component="security",
            severity=2,
            firing=True,
            started_at=now,
            detected_at=now,
            message=f"block #{f['id']}: {f['error'] or 'refused'}"[:1000],
            labels={"rule": "block_failed", "key": f["address"]},
        )
        queued += pipeline.process(conn, settings, signal, now).queued
    for fingerprint in firing - wanted:
        gone = Signal(
            fingerprint=fingerprint,
            source="security",
            title="the firewall refused a block",
            component="security",
            severity=2,
            firing=False,
            started_at=now,
            detected_at=now,
            message="the block is no longer meant to be in force, or is in force now",
        )
        queued += pipeline.process(conn, settings, gone, now).queued
    return queued


class FirewallTrouble(Exception):
    """nft refused a block, a removal or the table: the module is degraded until it works."""


def install(runtime: Runtime) -> None:
    respond = runtime.settings.security.respond
    if not respond.enabled or MODULE in runtime.engine.modules:
        return
    applier = Applier(
        runtime.store,
        firewall_for(respond),
        runtime.clock,
        owner=runtime.engine.instance[:64],
        zone=runtime.settings.zone,
    )
    last_reconcile: list[float] = []
    queued: list[int] = [0]

    def work(now: float) -> Pass:
        errors: list[str] = []
        if not last_reconcile or now - last_reconcile[0] >= respond.reconcile_interval:
            errors += applier.reconcile().errors
            last_reconcile[:] = [now]
        done = applier.run()
        done.errors[:0] = errors
        # by level: a refused block keeps the module unhealthy, not just the tick it failed in
        with runtime.store.begin() as conn:
            failed = failed_blocks(conn, now)
            queued[:] = [alert_failed_blocks(conn, runtime.settings, failed, now)]
        reported = set(done.failed)
        for f in failed:
            if f["id"] not in reported:
                done.errors.append(f"block #{f['id']} of {f['address']} failed: {f['error']}")
        return done

    async def tick(now: float) -> None:
        done = await asyncio.to_thread(work, now)
        if queued[0]:
            runtime.wake_outbox()
        if done.errors:
            raise FirewallTrouble("; ".join(done.errors)[:2000])

    runtime.engine.add(MODULE, respond.interval, tick)
