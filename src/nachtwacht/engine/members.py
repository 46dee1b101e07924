"""This process as a member of the store: its row, its heartbeat, and what it may do.

Every `serve` process registers a row in `members` and bumps its `beat` every `HEARTBEAT`
seconds (docs/decisions/0024-several-processes-one-store.md). From the rows it reads back it
learns which checking members are alive (`ownership.Observer`, on its own clock) and so which
probes are its own (`ownership.owned_by`).

A member whose heartbeat could not be written for `FENCE_AFTER` seconds stops being one in its
own eyes (`active` is False): it owns no probe, claims no outbox message and no escalation
step, and says so in /healthz. `FENCE_AFTER` < `DEAD_AFTER`, so it has stopped before the
others (who wait `DEAD_AFTER` after the last change they saw) take its work over.

A live member that sees another go silent claims its death on the row (a conditional update,
`store.claims`): the one that wins ends the dead member's outbox leases at once and raises the
"member silent" alert in the same transaction, so the alert is raised once.

SQLite holds one process: a second member on it is refused (`refuse_second`).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, select, update

from nachtwacht.alerts import service as alerts
from nachtwacht.alerts.service import Signal
from nachtwacht.config.schema import Settings
from nachtwacht.engine.ownership import CHECKING_ROLES, MemberRow, Observer
from nachtwacht.problems import Problem
from nachtwacht.store import claims
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store

log = logging.getLogger(__name__)

HEARTBEAT = 1.5  # seconds between two heartbeats
DEAD_AFTER = 7.0  # a member whose beat has not changed for this long is dead
FENCE_AFTER = 5.0  # our own heartbeat unwritten for this long: we stop claiming
STARTING_GRACE = 120.0  # a member that joined but never beat (still building) is dead after
SETTLE = 2 * HEARTBEAT  # a joining member waits this long before checking probes
FORGET_DEAD = 86_400.0  # rows of dead members are deleted after a day
ROLES = ("all", "web", "worker")
SQLITE_REFUSAL = (
    "SQLite holds one process: another nachtwacht serve ({other}) is using this store; "
    "use PostgreSQL for several (docs/operations.md)"
)


def local_id() -> str:
    """host:pid, as the outbox sender names its lease owner: a dead member's leases are its."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _rows(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(select(t.members)).mappings()]


def _row(r: dict[str, Any]) -> MemberRow:
    return MemberRow(r["id"], r["host"], r["pid"], r["role"], r["beat"], r["dead_at"])


def _pid_runs(pid: int) -> bool:
    if pid <= 0:
        return False  # not a process: kill() would signal a group
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def refuse_second(store: Store, me: str, now: float) -> None:
    """On SQLite: a Problem if another live process of this host holds this store.

    A SQLite file is one host's (on a network share its locking is not to be trusted anyway),
    so its clock and its process table are the reader's own: a row of another process counts
    while that pid runs and its heartbeat is fresh. Rows of other hosts (a restored backup of
    another installation) are left alone.
    """
    if store.dialect != "sqlite":
        return
    host = socket.gethostname()
    with store.connect() as conn:
        rows = _rows(conn)
    for r in rows:
        if r["id"] == me or r["dead_at"] is not None or r["host"] != host:
            continue
        if abs(now - r["heartbeat_at"]) > DEAD_AFTER or not _pid_runs(r["pid"]):
            continue
        other = f"pid {r['pid']}"
        raise Problem(SQLITE_REFUSAL.format(other=other), kind="conflict")


def silent_signal(row: dict[str, Any] | MemberRow, firing: bool, now: float, note: str) -> Signal:
    d = row if isinstance(row, dict) else row.__dict__
    return Signal(
        fingerprint=f"member:{d['id']}",
        source="nachtwacht",
        title=f"nachtwacht member {d['id']} ({d['role']}) is silent",
        component="nachtwacht",
        severity=2,
        firing=firing,
        started_at=now,
        detected_at=now,
        message=note,
        labels={"member": d["id"], "host": d["host"], "role": d["role"]},
    )


@dataclass
class Membership:
    store: Store
    settings: Settings
    role: str = "all"
    me: str = field(default_factory=local_id)
    heartbeat: float = HEARTBEAT
    dead_after: float = DEAD_AFTER
    fence_after: float = FENCE_AFTER
    settle: float = SETTLE
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    probes_owned: int = 0
    beat: int = 0
    last_written: float | None = None  # our clock, when our heartbeat was last committed
    settled_at: float | None = None  # from when we count ourselves among the checkers
    problem: str | None = None  # why we are not (or were not) a member, for /healthz
    # a heartbeat failed or hangs: without one, a fake clock's jumps in tests fence nobody
    trouble: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)
    declared: int = 0  # deaths this member claimed
    alone: bool = False  # no other member when we joined

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise Problem(f"role must be one of {', '.join(ROLES)}", field="role")
        self.observer = Observer(self.dead_after, STARTING_GRACE)

    # -- what others read of us -----------------------------------------------------------

    def active(self, now: float) -> bool:
        """May this process claim work? Not once its heartbeat failed for `fence_after`."""
        if self.last_written is None:
            return False
        return not self.trouble or now - self.last_written <= self.fence_after

    def checkers(self, now: float) -> set[str]:
        """The live checking members in our view, us included once settled and active."""
        live = self.observer.live_checkers(map(_row, self.rows), now, self.me)
        if (
            self.role in CHECKING_ROLES
            and self.active(now)
            and self.settled_at is not None
            and now >= self.settled_at
        ):
            live.add(self.me)
        return live

    # -- the store work, in a worker thread -----------------------------------------------

    def join(self, now: float) -> None:
        """Register (or re-register) our row; clear what a restart of ours left behind."""
        refuse_second(self.store, self.me, now)
        with self.store.begin() as conn:
            rows = _rows(conn)
            for r in rows:
                if r["id"] == self.me:
                    continue
                # our own host's earlier process (killed, now restarted): it is gone for sure
                gone = r["host"] == self.host and not _pid_runs(r["pid"])
                if gone or (r["dead_at"] is not None and now - r["dead_at"] > FORGET_DEAD):
                    claims.expire(conn, t.outbox, [r["id"]], now, t.outbox.c.status == "sending")
                    conn.execute(delete(t.members).where(t.members.c.id == r["id"]))
                    # the same service is back: its silence is over
                    alerts.process(
                        conn, self.settings, silent_signal(r, False, now, "restarted"), now
                    )
            conn.execute(delete(t.members).where(t.members.c.id == self.me))
            conn.execute(
                t.members.insert().values(
                    id=self.me,
                    host=self.host[:100],
                    pid=self.pid,
                    role=self.role,
                    started_at=now,
                    heartbeat_at=now,
                    beat=0,  # starting: the others give it STARTING_GRACE, check nothing
                    probes_owned=self.probes_owned,
                )
            )
            self.rows = _rows(conn)
        self.observer.observe(map(_row, self.rows), now)
        self.last_written = now
        self.trouble = False
        # alone: check everything at once; with others, settle from our first beat (when they
        # start counting us), however long our start takes
        self.alone = not self.observer.others(map(_row, self.rows), now, self.me)
        self.settled_at = now if self.alone else None

    def beat_once(self, now: float) -> list[str]:
        """Write our heartbeat, read everyone's, claim the deaths we see; return those."""
        self.beat += 1
        with self.store.begin() as conn:
            changed = conn.execute(
                update(t.members)
                .where(t.members.c.id == self.me, t.members.c.dead_at.is_(None))
                .values(beat=self.beat, heartbeat_at=now, probes_owned=self.probes_owned)
            ).rowcount
        if not changed:
            # declared dead while we could not write (or the row was deleted): join again,
            # and settle again, so the members who took our probes over hand them back first
            log.warning("member %s was declared dead by the others; joining again", self.me)
            self.join(now)
            with self.store.begin() as conn:
                alerts.process(
                    conn, self.settings, silent_signal(self._mine(), False, now, "back"), now
                )
            return []
        fenced = not self.active(now)
        self.last_written = now
        self.trouble = False
        if self.settled_at is None:
            self.settled_at = now + self.settle  # our first beat: the others count us now
        if fenced or self.problem is not None:
            log.warning("member %s: heartbeat written again; claiming work again", self.me)
            self.problem = None
            # our probes went to others meanwhile: let them see us again before we check
            self.settled_at = now + self.settle
        with self.store.connect() as conn:
            self.rows = _rows(conn)
        self.observer.observe(map(_row, self.rows), now)
        return self._declare_dead(now)

    def _mine(self) -> dict[str, Any]:
        return {"id": self.me, "host": self.host, "role": self.role}

    def _declare_dead(self, now: float) -> list[str]:
        dead = []
        for row in self.observer.silent(map(_row, self.rows), now, self.me):
            m = t.members.c
            with self.store.begin() as conn:
                # one member wins the row: it alone frees the leases and raises the alert
                if not claims.claim(
                    conn,
                    t.members,
                    row.id,
                    m.dead_at.is_(None),
                    m.beat == row.beat,
                    values={"dead_at": now, "dead_by": self.me},
                ):
                    continue
                freed = claims.expire(conn, t.outbox, [row.id], now, t.outbox.c.status == "sending")
                note = (
                    f"no heartbeat for {self.dead_after:g} s; its probes are checked by the "
                    f"other members, {freed} message(s) it was sending are sent by them"
                )
                alerts.process(conn, self.settings, silent_signal(row, True, now, note), now)
            log.error("member %s is silent: %s", row.id, note)
            dead.append(row.id)
        self.declared += len(dead)
        if dead:
            with self.store.connect() as conn:
                self.rows = _rows(conn)
        return dead

    def fence(self, now: float, reason: str) -> bool:
        """Note a failed (or hanging) heartbeat; True when we stop claiming (said once)."""
        self.trouble = True
        if self.active(now):
            return False
        if self.problem is None:
            self.problem = (
                f"not a member: no heartbeat written for {self.fence_after:g} s ({reason}); "
                "no probes checked, no pages claimed here until the store answers"
            )
            log.error("member %s: %s", self.me, self.problem)
            return True
        return False

    def leave(self) -> None:
        """A clean stop: our row goes, the others take our probes at their next heartbeat."""
        with self.store.begin() as conn:
            conn.execute(delete(t.members).where(t.members.c.id == self.me))

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "id": self.me,
            "role": self.role,
            "active": self.active(now),
            "probes_owned": self.probes_owned,
            "checkers": sorted(self.checkers(now)),
            "problem": self.problem,
        }


def list_members(conn: Connection) -> list[dict[str, Any]]:
    """Every member row, oldest first, for `status` and the status page."""
    rows = conn.execute(select(t.members).order_by(t.members.c.started_at)).mappings()
    return [dict(r) for r in rows]
