"""Address blocks and the HTTP lockdown: rows in `security_blocks`, applied to the firewall.

A block is an obligation, so it is a row first (`block` writes it `pending`, in the caller's
transaction, with its audit entry) and a firewall change second: the `Applier` claims the row
by a conditional update with a lease, runs nft, and records the outcome only if the row is
still its own. Killed between nft and its commit, its lease runs out and the next applier does
it again; adding an element that is there and removing one that is gone are both no-ops, so
doing it twice is harmless. The incident's timeline hears of a block only once nft took it.

States: pending → active (in the firewall) → expiring (its time is up or it was lifted by hand;
the removal is claimed) → removed; a block nft refused is `failed` (with nft's message). A
lockdown is rows of the same table: one per closed port (rule `lockdown`, address `tcp/80`)
and one per source it lets through (rule `lockdown-allow`), applied sources first. The
`Applier` (security/applier.py) carries them out.

Why one module: blocks and the lockdown are rows of one table with one validation (what may
be blocked or let through, durations, the incident) and one reading (views, lists); split,
each half would import the other's private checks.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import subprocess
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import psutil
from sqlalchemy import Connection, insert, or_, select, update

from nachtwacht.auth.audit import audit
from nachtwacht.clock import iso
from nachtwacht.config import limits
from nachtwacht.durations import format_duration
from nachtwacht.incidents import service as incidents
from nachtwacht.problems import Problem
from nachtwacht.security.firewall import Kind, Nftables, canonical
from nachtwacht.security.models import RespondSettings
from nachtwacht.store import tables as t
from nachtwacht.store.db import inserted_id

log = logging.getLogger(__name__)

LOCKDOWN = "lockdown"  # a port the lockdown closes; address "tcp/<port>"
LOCKDOWN_ALLOW = "lockdown-allow"  # a source the lockdown lets through
LOCKDOWN_RULES = (LOCKDOWN, LOCKDOWN_ALLOW)
LIVE = ("pending", "active", "expiring")
LEASE = 60.0  # seconds an applier holds a row; nft answers in milliseconds
# the broadest network a block may name without --force (as for runbook inputs): more locks
# out the responders too
MIN_PREFIX = {4: 16, 6: 32}
MAX_PORTS = 20
ALLOW_MARGIN = 60.0  # seconds an allowed source outlives the lockdown's ports in the kernel

b = t.security_blocks
c = b.c


class BlockError(Problem):
    """A block, unblock or lockdown refused; nothing was changed."""


def enabled(respond: RespondSettings) -> None:
    if not respond.enabled:
        raise BlockError(
            "security.respond.enabled is false: Nachtwacht does not change the firewall "
            "(turn it on in nachtwacht.yaml; see 'Respond' in docs/security-monitoring.md)",
            "security.respond.enabled",
            kind="conflict",
        )


def own_addresses(netns: str | None = None) -> set[str]:
    """The firewall host's addresses, on every interface: blocking one cuts the host off
    itself. With `security.respond.netns`, the namespace's (the firewall is there), not ours."""
    found: set[str] = set()
    if netns:
        try:
            done = subprocess.run(
                ["ip", "-j", "-n", netns, "addr", "show"],
                capture_output=True,
                timeout=10,
                check=True,
            )
            for link in json.loads(done.stdout or b"[]"):
                for a in link.get("addr_info", []):
                    if a.get("local"):
                        found.add(str(a["local"]).split("%", 1)[0])
        except (OSError, subprocess.SubprocessError, ValueError):
            pass  # nft will fail in a namespace `ip` cannot see; that error is the clear one
        return found
    try:
        for addrs in psutil.net_if_addrs().values():
            for a in addrs:
                if a.family in (socket.AF_INET, socket.AF_INET6):
                    found.add(a.address.split("%", 1)[0])
    except OSError:  # pragma: no cover - /proc unreadable
        pass
    return found


def _covers(network: ipaddress.IPv4Network | ipaddress.IPv6Network, addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr) in network
    except ValueError:
        return False


def check_address(
    value: str,
    respond: RespondSettings,
    *,
    force: bool = False,
    own: Iterable[str] | None = None,
    field: str = "address",
) -> str:
    """The canonical form of an address or network that may be blocked, or BlockError.

    Never: the unspecified address or a /0 (everyone). Without `force`: loopback, this host's
    own addresses, the configured allow-list, or a network broader than /16 (/32 for IPv6).
    """
    if len(value) > 64:
        raise BlockError(limits.too_long(field, 64), field)
    try:
        network = ipaddress.ip_network(canonical(value), strict=False)
    except ValueError:
        raise BlockError(
            f"{field}: '{value}' is not an IP address or network (203.0.113.9, 203.0.113.0/24)",
            field,
        ) from None
    shown = canonical(str(network))
    if network.prefixlen == 0 or network.network_address.is_unspecified:
        raise BlockError(f"{field}: {shown} means everyone; refused", field)
    if force:
        return shown
    prefix, version = network.prefixlen, network.version
    if prefix < MIN_PREFIX[version]:
        raise BlockError(
            f"{field}: {network} is too broad (at most /{MIN_PREFIX[version]} for IPv{version} "
            "without --force)",
            field,
        )
    if network.network_address.is_loopback or (
        isinstance(network, ipaddress.IPv6Network) and network.overlaps(ipaddress.ip_network("::1"))
    ):
        raise BlockError(f"{field}: {shown} is loopback (use --force to block it anyway)", field)
    for addr in own_addresses(respond.netns) if own is None else own:
        if _covers(network, addr):
            raise BlockError(
                f"{field}: {shown} holds {addr}, an address of this host "
                "(use --force to block it anyway)",
                field,
            )
    for allowed in respond.allow:
        if network.overlaps(ipaddress.ip_network(allowed)):
            raise BlockError(
                f"{field}: {shown} overlaps {allowed} in security.respond.allow "
                "(use --force to block it anyway)",
                field,
            )
    return canonical(str(network))


def _duration(respond: RespondSettings, seconds: float | None, field: str) -> float:
    if seconds is None:
        return float(respond.default_duration)
    if seconds <= 0:
        raise BlockError(f"{field}: a block lasts a while: give a duration such as 1h", field)
    if seconds > respond.max_duration:
        raise BlockError(
            f"{field}: {format_duration(seconds)} is longer than security.respond.max_duration "
            f"({format_duration(respond.max_duration)})",
            field,
        )
    return float(seconds)


def _text(value: str | None, field: str, limit: int = limits.TEXT) -> str | None:
    if value is not None and len(value) > limit:
        raise BlockError(limits.too_long(field, limit), field)
    return value or None


def _incident(conn: Connection, incident_id: int | None) -> None:
    if incident_id is not None and incidents.get_incident(conn, incident_id) is None:
        raise BlockError(f"incident: there is no incident #{incident_id}", "incident", "not_found")


def block(
    conn: Connection,
    respond: RespondSettings,
    address: str,
    *,
    duration: float | None,
    reason: str | None,
    actor: str,
    now: float,
    incident_id: int | None = None,
    rule: str | None = None,
    force: bool = False,
    own: Iterable[str] | None = None,
    ip: str | None = None,
) -> int:
    """Write a pending block (the applier puts it in the firewall) and its audit entry;
    `ip` is the requester's, for the audit log."""
    enabled(respond)
    addr = check_address(address, respond, force=force, own=own)
    seconds = _duration(respond, duration, "duration")
    why = _text(reason, "reason")
    _text(rule, "rule", 64)
    if rule in LOCKDOWN_RULES:
        raise BlockError(f"rule: '{rule}' is the lockdown's; use lockdown", "rule")
    _incident(conn, incident_id)
    wanted = ipaddress.ip_network(addr)
    live = conn.execute(
        select(c.id, c.address, c.expires_at).where(
            c.state.in_(LIVE), _not_lockdown(), _not_lifted(now)
        )
    ).all()
    for held in live:
        # nftables' interval sets refuse overlapping elements, and one block is enough
        other = ipaddress.ip_network(held.address)
        if other.version == wanted.version and other.overlaps(wanted):
            until = iso(held.expires_at) or "it is lifted"
            what = addr if held.address == addr else f"{addr} overlaps {held.address}, which"
            raise BlockError(
                f"address: {what} is already blocked until {until} (block #{held.id}); "
                "unblock it first to change it",
                "address",
                kind="conflict",
            )
    block_id = inserted_id(
        conn.execute(
            insert(b).values(
                address=addr,
                reason=why,
                created_by=actor[: limits.NAME],
                created_at=now,
                expires_at=now + seconds,
                state="pending",
                incident_id=incident_id,
                rule=rule,
            )
        )
    )
    detail = {"id": block_id, "until": iso(now + seconds), "reason": why, "incident": incident_id}
    audit(conn, actor, "security.block", addr, detail, ip, now)
    return block_id


def _not_lockdown() -> Any:
    return or_(c.rule.is_(None), c.rule.not_in(LOCKDOWN_RULES))


def _not_lifted(now: float) -> Any:
    return or_(c.expires_at.is_(None), c.expires_at > now)


def unblock(
    conn: Connection, address: str, actor: str, now: float, ip: str | None = None
) -> list[int]:
    """End the live blocks of `address` now; the applier takes them out of the firewall. A
    block the firewall refused (`failed`) is dismissed at once: there is nothing to remove."""
    try:
        addr = canonical(address)
    except ValueError:
        raise BlockError(
            f"address: '{address[:64]}' is not an IP address or network", "address"
        ) from None
    ids = _lift(conn, [c.address == addr, _not_lockdown()], actor, now)
    failed = [
        r.id
        for r in conn.execute(
            select(c.id).where(
                c.address == addr, _not_lockdown(), c.state == "failed", _not_lifted(now)
            )
        )
    ]
    if failed:
        conn.execute(
            update(b)
            .where(c.id.in_(failed), c.state == "failed")
            .values(state="removed", removed_at=now, removed_by=actor[: limits.NAME])
        )
    if not ids and not failed:
        raise BlockError(f"address: {addr} is not blocked", "address", kind="not_found")
    audit(conn, actor, "security.unblock", addr, {"ids": ids + failed}, ip, now)
    return ids + failed


def failed_blocks(conn: Connection, now: float) -> list[dict[str, Any]]:
    """Blocks the firewall refused that would still be in force: the module stays unhealthy
    while there are any (until their time would have ended, or someone unblocks them)."""
    rows = conn.execute(
        select(b).where(c.state == "failed", _not_lifted(now)).order_by(c.id)
    ).mappings()
    return [block_view(r, now) for r in rows]


def _lift(conn: Connection, where: list[Any], actor: str, now: float) -> list[int]:
    rows = conn.execute(
        select(c.id).where(*where, c.state.in_(("pending", "active")), _not_lifted(now))
    ).all()
    ids = [r.id for r in rows]
    if ids:
        conn.execute(
            update(b)
            .where(c.id.in_(ids), c.state.in_(("pending", "active")))
            .values(expires_at=now, removed_by=actor[: limits.NAME])
        )
    return ids


# ---------------------------------------------------------------------------- lockdown


def lockdown(
    conn: Connection,
    respond: RespondSettings,
    *,
    ports: list[int],
    allow: list[str],
    duration: float | None,
    reason: str | None,
    actor: str,
    now: float,
    incident_id: int | None = None,
    ip: str | None = None,
) -> list[int]:
    """Close `ports` (TCP) to everyone but `allow`, security.respond.allow and loopback."""
    enabled(respond)
    if not ports:
        raise BlockError("port: give at least one port to close (--port 80)", "port")
    if len(ports) > MAX_PORTS:
        raise BlockError(f"port: at most {MAX_PORTS} ports", "port")
    for port in ports:
        if not 1 <= port <= 65535:
            raise BlockError(f"port: {port} is not a TCP port (1-65535)", "port")
    if len(allow) > 100:
        raise BlockError("allow: at most 100 networks", "allow")
    sources: list[str] = []
    for value in [*allow, *respond.allow]:
        try:
            net = canonical(value)
        except ValueError:
            raise BlockError(
                f"allow: '{value[:64]}' is not an IP address or network", "allow"
            ) from None
        if ipaddress.ip_network(net).prefixlen == 0:
            raise BlockError(f"allow: {net} is everyone; that is no lockdown", "allow")
        sources.append(net)
    seconds = _duration(respond, duration, "duration")
    why = _text(reason, "reason")
    _incident(conn, incident_id)
    on = conn.execute(
        select(c.id).where(c.rule == LOCKDOWN, c.state.in_(LIVE), _not_lifted(now))
    ).first()
    if on is not None:
        raise BlockError(
            "lockdown: a lockdown is already on; turn it off first (lockdown --off)",
            "lockdown",
            kind="conflict",
        )
    rows = [(LOCKDOWN_ALLOW, s) for s in dict.fromkeys(sources)]
    rows += [(LOCKDOWN, f"tcp/{p}") for p in dict.fromkeys(ports)]
    ids = []
    for rule, address in rows:  # sources first: their ids are lower, and applied first
        ids.append(
            inserted_id(
                conn.execute(
                    insert(b).values(
                        address=address,
                        reason=why,
                        created_by=actor[: limits.NAME],
                        created_at=now,
                        expires_at=now + seconds,
                        state="pending",
                        incident_id=incident_id,
                        rule=rule,
                    )
                )
            )
        )
    detail = {
        "ports": ports,
        "allow": sorted(set(sources)),
        "until": iso(now + seconds),
        "reason": why,
        "incident": incident_id,
    }
    audit(conn, actor, "security.lockdown", ",".join(map(str, ports)), detail, ip, now)
    return ids


def lockdown_off(conn: Connection, actor: str, now: float, ip: str | None = None) -> list[int]:
    ids = _lift(conn, [c.rule.in_(LOCKDOWN_RULES)], actor, now)
    if not ids:
        raise BlockError("lockdown: no lockdown is on", "lockdown", kind="not_found")
    audit(conn, actor, "security.lockdown_off", None, {"ids": ids}, ip, now)
    return ids


# ---------------------------------------------------------------------------- reading


def block_view(row: Any, now: float) -> dict[str, Any]:
    lifted = row["expires_at"] is not None and row["expires_at"] <= now
    return {
        "id": row["id"],
        "address": row["address"],
        "state": row["state"],
        "since": iso(row["applied_at"] or row["created_at"]),
        "until": iso(row["removed_at"] if row["state"] == "removed" else row["expires_at"]),
        "created_at": iso(row["created_at"]),
        "created_by": row["created_by"],
        "reason": row["reason"],
        "applied_at": iso(row["applied_at"]),
        "removed_at": iso(row["removed_at"]),
        "removed_by": row["removed_by"],
        "incident_id": row["incident_id"],
        "rule": row["rule"],
        "error": row["error"],
        "lifting": lifted and row["state"] in LIVE,
    }


def list_blocks(
    conn: Connection,
    now: float,
    *,
    include_all: bool = False,
    lockdown_rows: bool = False,
    limit: int = 1000,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Blocks in force (or waiting to be applied or removed), newest first; `include_all`:
    the history too. `lockdown_rows`: the lockdown's rows instead of the blocks."""
    kind = c.rule.in_(LOCKDOWN_RULES) if lockdown_rows else _not_lockdown()
    query = select(b).where(kind).order_by(c.created_at.desc(), c.id.desc())
    if not include_all:
        query = query.where(c.state.in_(LIVE))
    rows = conn.execute(query.limit(limit).offset(offset)).mappings().all()
    return [block_view(r, now) for r in rows]


def count_blocks(conn: Connection, *, include_all: bool = False) -> int:
    from sqlalchemy import func

    query = select(func.count()).select_from(b).where(_not_lockdown())
    if not include_all:
        query = query.where(c.state.in_(LIVE))
    return int(conn.execute(query).scalar_one())


def get_block(conn: Connection, block_id: int, now: float) -> dict[str, Any]:
    row = conn.execute(select(b).where(c.id == block_id)).mappings().first()
    if row is None:
        raise BlockError(f"there is no block #{block_id}", "id", kind="not_found")
    return block_view(row, now)


# ---------------------------------------------------------------------------- applying


def kind_of(rule: str | None) -> Kind:
    return "port" if rule == LOCKDOWN else "allow" if rule == LOCKDOWN_ALLOW else "block"


def element_of(rule: str | None, address: str) -> str:
    return address.removeprefix("tcp/") if rule == LOCKDOWN else address


def firewall_for(respond: RespondSettings) -> Nftables:
    prefix = ("ip", "netns", "exec", respond.netns) if respond.netns else ()
    return Nftables(respond.nft, prefix)


def _until(ts: float | None, zone: Any = UTC) -> str:
    if ts is None:
        return "it is lifted"
    return datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def _timeout(rule: str | None, expires_at: float | None, now: float) -> float | None:
    """The kernel's timeout for an element: the time its row has left; an allowed source of
    the lockdown a little longer, so the kernel never drops it before the ports it opens."""
    if expires_at is None:
        return None
    return expires_at - now + (ALLOW_MARGIN if rule == LOCKDOWN_ALLOW else 0.0)
