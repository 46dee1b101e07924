"""The applier: claims block rows by a conditional update with a lease, changes the firewall,
and records the outcome only while the row is still its own (see `security.blocks`)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from nachtwacht.auth.audit import audit
from nachtwacht.clock import Clock
from nachtwacht.incidents import service as incidents
from nachtwacht.security.blocks import (
    LEASE,
    LIVE,
    LOCKDOWN,
    LOCKDOWN_ALLOW,
    LOCKDOWN_RULES,
    _not_lifted,
    _timeout,
    _until,
    b,
    c,
    element_of,
    kind_of,
)
from nachtwacht.security.firewall import Firewall, FirewallError
from nachtwacht.store import claims
from nachtwacht.store.db import Store

log = logging.getLogger(__name__)


@dataclass
class Pass:
    """What one applier pass did; `errors` make the engine module unhealthy."""

    applied: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    reapplied: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Applier:
    """Claims block rows and makes the firewall match them, one row per transaction pair."""

    def __init__(
        self,
        store: Store,
        firewall: Firewall,
        clock: Clock,
        owner: str | None = None,
        lease: float = LEASE,
        zone: Any = UTC,
    ) -> None:
        self.store = store
        self.firewall = firewall
        self.clock = clock
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"[:64]
        self.lease = lease
        self.zone = zone
        self.ensured = False

    # -- one pass ---------------------------------------------------------------------

    def run(self, only: Iterable[int] | None = None) -> Pass:
        """Apply the pending blocks that are due (those in `only`, if given), remove those
        whose time is up."""
        done = Pass()
        now = self.clock.now()
        wanted = set(only) if only is not None else None
        with self.store.connect() as conn:
            due = conn.execute(
                select(c.id, c.rule, c.address, c.state, c.expires_at, c.claimed_until)
                .where(c.state.in_(LIVE))
                .order_by(c.id)
            ).all()
        # a lockdown's ports are opened before its sources leave the allow-list, and its
        # sources go in before its ports close: it never shuts out those it lets through
        removals = [
            r.id
            for r in sorted(due, key=lambda r: (r.rule != LOCKDOWN, r.id))
            if (r.state != "expiring" and r.expires_at is not None and r.expires_at <= now)
            or (r.state == "expiring" and (r.claimed_until is None or r.claimed_until < now))
        ]
        pending = sorted(
            (r for r in due if r.state == "pending" and r.id not in removals),
            key=lambda r: (r.rule == LOCKDOWN, r.id),
        )
        # every due removal, even when asked for some rows only: a block lifted a moment ago
        # must leave before a new block of the same address goes in
        for row_id in removals:
            self.remove_one(row_id, done)
        # an element whose removal failed (or is another applier's, in flight) is not added
        # for a new block now: nft keeps the element it has, and the removal's retry would
        # then take out the new block's element too, leaving it `active` in the store only
        leaving = {
            (kind_of(r.rule), element_of(r.rule, r.address))
            for r in due
            if r.id in removals and r.id not in done.removed
        }
        pending = [
            r for r in pending if (kind_of(r.rule), element_of(r.rule, r.address)) not in leaving
        ]
        if pending and not self._ensure(done):
            return done
        for r in pending:
            if wanted is None or r.id in wanted:
                self.apply_one(r.id, done)
        return done

    def _ensure(self, done: Pass) -> bool:
        if self.ensured:
            return True
        try:
            self.firewall.ensure()
        except FirewallError as exc:
            done.errors.append(f"cannot set up the nftables table: {exc}")
            return False
        self.ensured = True
        return True

    def apply_one(self, row_id: int, done: Pass) -> None:
        now = self.clock.now()
        lease = claims.Lease.of(self.owner, now, self.lease)
        with self.store.begin() as conn:
            won = claims.claim(
                conn,
                b,
                row_id,
                c.state == "pending",
                _not_lifted(now),
                or_(c.claimed_until.is_(None), c.claimed_until < now),
                values={},
                lease=lease,
            )
            row = conn.execute(select(b).where(c.id == row_id)).mappings().first()
        if not won or row is None:
            return
        kind, element = kind_of(row["rule"]), element_of(row["rule"], row["address"])
        left = _timeout(row["rule"], row["expires_at"], now)
        try:
            self.firewall.add(kind, element, left)
        except FirewallError as exc:
            self._failed(row, str(exc), done)
            return
        applied = self.clock.now()
        with self.store.begin() as conn:
            if not claims.release(
                conn,
                b,
                row_id,
                self.owner,
                c.state == "pending",
                values={"state": "active", "applied_at": applied, "error": None},
            ):
                return  # the lease ran out and another applier did it; its record counts
            message = self._applied_message(row)
            self._record(conn, row, applied, "security_block", "nachtwacht", message)
        done.applied.append(row_id)

    def _applied_message(self, row: Any) -> str:
        until = _until(row["expires_at"], self.zone)
        why = f" ({row['reason']})" if row["reason"] else ""
        if row["rule"] == LOCKDOWN:
            return f"lockdown: closed TCP port {element_of(LOCKDOWN, row['address'])} until {until}"
        if row["rule"] == LOCKDOWN_ALLOW:
            return f"lockdown: {row['address']} may still connect until {until}"
        return f"blocked {row['address']} until {until}{why}, requested by {row['created_by']}"

    def _failed(self, row: Any, error: str, done: Pass) -> None:
        now = self.clock.now()
        with self.store.begin() as conn:
            if not claims.release(
                conn,
                b,
                row["id"],
                self.owner,
                c.state == "pending",
                values={"state": "failed", "error": error[:2000]},
            ):
                return
            what = "close the port" if row["rule"] == LOCKDOWN else f"block {row['address']}"
            self._record(
                conn, row, now, "security_block_failed", "nachtwacht", f"could not {what}: {error}"
            )
            detail = {"id": row["id"], "error": error}
            audit(conn, "nachtwacht", "security.block_failed", row["address"], detail, None, now)
        done.failed.append(row["id"])
        done.errors.append(f"block #{row['id']} of {row['address']}: {error}")

    def remove_one(self, row_id: int, done: Pass) -> None:
        now = self.clock.now()
        lease = claims.Lease.of(self.owner, now, self.lease)
        with self.store.begin() as conn:
            won = claims.claim(
                conn,
                b,
                row_id,
                or_(
                    and_(c.state.in_(("pending", "active")), c.expires_at <= now),
                    and_(
                        c.state == "expiring",
                        or_(c.claimed_until.is_(None), c.claimed_until < now),
                    ),
                ),
                values={"state": "expiring"},
                lease=lease,
            )
            row = conn.execute(select(b).where(c.id == row_id)).mappings().first()
        if not won or row is None:
            return
        kind, element = kind_of(row["rule"]), element_of(row["rule"], row["address"])
        try:
            self.firewall.remove(kind, element)
        except FirewallError as exc:
            with self.store.begin() as conn:
                # kept `expiring`; claimable again at once, so the next pass retries
                values = {"error": str(exc)[:2000], "claimed_until": now}
                claims.release(conn, b, row_id, self.owner, values=values)
            done.errors.append(f"removing block #{row_id} of {row['address']}: {exc}")
            return
        removed = self.clock.now()
        with self.store.begin() as conn:
            if not claims.release(
                conn,
                b,
                row_id,
                self.owner,
                c.state == "expiring",
                values={"state": "removed", "removed_at": removed, "error": None},
            ):
                return
            by = row["removed_by"]
            if row["applied_at"] is None:
                message = f"block of {row['address']} withdrawn before it was applied"
            elif row["rule"] == LOCKDOWN:
                message = f"lockdown: TCP port {element} open again" + (
                    f" (turned off by {by})" if by else " (its time was up)"
                )
            elif row["rule"] == LOCKDOWN_ALLOW:
                message = f"lockdown: {element} no longer on its allow-list"
            elif by:
                message = f"unblocked {row['address']} (lifted by {by})"
            else:
                message = f"unblocked {row['address']}: its block expired"
            self._record(conn, row, removed, "security_unblock", by or "nachtwacht", message)
            if row["rule"] not in LOCKDOWN_RULES:
                detail = {"id": row_id, "expired": by is None}
                who = by or "nachtwacht"
                audit(conn, who, "security.unblocked", row["address"], detail, None, removed)
        done.removed.append(row_id)

    def _record(
        self, conn: Connection, row: Any, now: float, kind: str, actor: str, message: str
    ) -> None:
        if row["incident_id"] is not None:
            data = {"block": row["id"], "address": row["address"], "rule": row["rule"]}
            incidents.add_event(conn, row["incident_id"], now, kind, actor, message, data)

    # -- reconcile --------------------------------------------------------------------

    def reconcile(self) -> Pass:
        """Make the firewall hold what the store says is active: after a reboot emptied
        nftables, the active blocks go back in (with the time they have left); elements no
        live row accounts for come out."""
        done = Pass()
        self.ensured = False
        if not self._ensure(done):
            return done
        now = self.clock.now()
        with self.store.connect() as conn:
            rows = conn.execute(
                select(c.id, c.address, c.rule, c.state, c.expires_at).where(c.state.in_(LIVE))
            ).all()
        for kind in ("block", "allow", "port"):
            try:
                present = self.firewall.elements(kind)
            except FirewallError as exc:
                done.errors.append(str(exc))
                continue
            mine = [r for r in rows if kind_of(r.rule) == kind]
            accounted = {element_of(r.rule, r.address) for r in mine}
            for r in mine:
                element = element_of(r.rule, r.address)
                live = r.expires_at is None or r.expires_at > now
                if r.state == "active" and live and element not in present:
                    left = _timeout(r.rule, r.expires_at, now)
                    try:
                        self.firewall.add(kind, element, left)
                    except FirewallError as exc:
                        done.errors.append(f"re-applying block #{r.id} of {r.address}: {exc}")
                        continue
                    log.warning("block #%s of %s was not in nftables; re-applied", r.id, r.address)
                    done.reapplied.append(r.id)
            for element in present - accounted:
                try:
                    self.firewall.remove(kind, element)
                except FirewallError as exc:
                    done.errors.append(f"removing {element}, which no block holds: {exc}")
                    continue
                log.warning("%s was in nftables without a block in the store; removed", element)
        return done
