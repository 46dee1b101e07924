"""Engine wiring: the `security-respond` module keeps nftables in step with `security_blocks`.

Installed whenever `security.respond.enabled` is on (whether or not logs are watched): every
`security.respond.interval` it applies pending blocks and removes those whose time is up; at
its first tick, and every `reconcile_interval` after, it re-applies active blocks the firewall
lost (a reboot empties nftables) and removes elements no block accounts for. A firewall that
refuses shows in the module's health (/healthz, `nachtwacht status`) while the refused block
would still be in force (or until it is unblocked), and on the block's incident's timeline.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from nachtwacht.security.applier import Applier, Pass
from nachtwacht.security.blocks import failed_blocks, firewall_for

if TYPE_CHECKING:
    from nachtwacht.engine.runtime import Runtime

MODULE = "security-respond"


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

    def work(now: float) -> Pass:
        errors: list[str] = []
        if not last_reconcile or now - last_reconcile[0] >= respond.reconcile_interval:
            errors += applier.reconcile().errors
            last_reconcile[:] = [now]
        done = applier.run()
        done.errors[:0] = errors
        # by level: a refused block keeps the module unhealthy, not just the tick it failed in
        with runtime.store.connect() as conn:
            failed = failed_blocks(conn, now)
        reported = set(done.failed)
        for f in failed:
            if f["id"] not in reported:
                done.errors.append(f"block #{f['id']} of {f['address']} failed: {f['error']}")
        return done

    async def tick(now: float) -> None:
        done = await asyncio.to_thread(work, now)
        if done.errors:
            raise FirewallTrouble("; ".join(done.errors)[:2000])

    runtime.engine.add(MODULE, respond.interval, tick)
