"""The audit log's hash chain: appending an entry, and verifying the chain.

Each `audit_log` row carries `seq` (1, 2, 3, ... with no gaps), `prev_hash` (the `hash` of the
entry before it) and `hash`, the SHA-256 of its canonical form (`canonical`). The one-row
`audit_head` table holds the newest entry's seq and hash, and the chain's base: the seq and
hash the oldest kept entry chains to (0 and GENESIS until entries are ever pruned).

Appends are serialised by the head row: `append` first updates it (which takes its row lock on
PostgreSQL and MariaDB, and SQLite's write lock), then reads it, so two transactions can never
chain to the same previous entry; the second waits for the first to commit. The unique `seq`
is a second guard. The lock is held until the caller's transaction ends, so audit late in a
transaction when it can (decision 28).

Verification is in the foundation so `store check`, `doctor` and the restoration checklist can
run it without importing the auth domain.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from nachtwacht.clock import iso
from nachtwacht.store import tables as t

GENESIS = "0" * 64
VERSION = "nachtwacht-audit/1"  # in every hash: a later format can never collide with this one
HEAD_ID = 1
# rows read per query when verifying: a long log is read in bounded batches, not at once
BATCH = 2000
FIELDS = ("ts", "actor", "action", "target", "detail_json", "ip")


def canonical(seq: int, entry: dict[str, Any], prev_hash: str) -> bytes:
    """The bytes an entry's hash covers: version, seq, the entry's fields, prev_hash.

    `ts` is the repr of the float the store keeps (every backend stores an IEEE double, which
    repr round-trips exactly); text is JSON with ASCII escapes, so the form is one byte string
    whatever the database's character set.
    """
    ts = entry["ts"]
    values = [
        VERSION,
        int(seq),
        repr(float(ts)),
        *(entry[name] for name in FIELDS[1:]),
        prev_hash,
    ]
    return json.dumps(values, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def entry_hash(seq: int, entry: dict[str, Any], prev_hash: str) -> str:
    return hashlib.sha256(canonical(seq, entry, prev_hash)).hexdigest()


_h = t.audit_head.c
# built once: appends are on the login path, and building statements cost more than running them
_LOCK = (
    update(t.audit_head).where(_h.id == HEAD_ID).values(seq=_h.seq + 1, updated_at=bindparam("now"))
)
_READ = select(_h.seq, _h.hash).where(_h.id == HEAD_ID)
_INSERT = insert(t.audit_log)
_SET_HASH = update(t.audit_head).where(_h.id == HEAD_ID).values(hash=bindparam("digest"))
_CREATE = insert(t.audit_head).values(
    id=HEAD_ID, seq=1, hash=GENESIS, base_seq=0, base_hash=GENESIS, updated_at=bindparam("now")
)


def append(conn: Connection, entry: dict[str, Any], now: float) -> int:
    """Insert one audit entry (keys: FIELDS) chained to the newest; returns its seq.

    Runs in the caller's transaction, which holds the head's lock from here until it ends.
    """
    values = {name: entry.get(name) for name in FIELDS}
    values["ts"] = float(entry["ts"])  # an int would read back as a float and hash otherwise
    if not conn.execute(_LOCK, {"now": now}).rowcount:
        _create_head(conn, now)
    seq, prev_hash = conn.execute(_READ).one()
    digest = entry_hash(seq, values, prev_hash)
    conn.execute(_INSERT, {**values, "seq": seq, "prev_hash": prev_hash, "hash": digest})
    conn.execute(_SET_HASH, {"digest": digest})
    return int(seq)


def _create_head(conn: Connection, now: float) -> None:
    """The first entry of a store: make the head row, already counting that entry.

    Two first entries at once: one insert wins, the other fails on the primary key (after
    waiting for the winner's commit) inside its savepoint and then locks the winner's row.
    """
    try:
        with conn.begin_nested():
            conn.execute(_CREATE, {"now": now})
    except IntegrityError:
        conn.execute(_LOCK, {"now": now})


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str
    base_seq: int
    base_hash: str


def read_head(conn: Connection) -> Head | None:
    """The chain's head as committed (None: no entry was ever chained)."""
    h = t.audit_head.c
    row = conn.execute(
        select(h.seq, h.hash, h.base_seq, h.base_hash).where(h.id == HEAD_ID)
    ).first()
    return None if row is None else Head(int(row[0]), row[1], int(row[2]), row[3])


@dataclass(frozen=True)
class Broken:
    """The first entry where the chain does not hold, and why."""

    id: int | None
    seq: int | None
    ts: float | None
    action: str | None
    reason: str

    def describe(self) -> str:
        if self.id is None:
            return self.reason
        return f"entry id {self.id} (seq {self.seq}, {iso(self.ts)}, {self.action}): {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "seq": self.seq,
            "ts": iso(self.ts),
            "action": self.action,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class ChainReport:
    entries: int  # verified entries (up to the first broken one)
    head: Head | None
    broken: Broken | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None

    def describe(self) -> str:
        if self.broken is not None:
            return f"broken at {self.broken.describe()}"
        if self.head is None:
            return "no entries yet"
        return f"{self.entries} entries intact, head seq {self.head.seq} hash {self.head.hash}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "head_seq": None if self.head is None else self.head.seq,
            "head_hash": None if self.head is None else self.head.hash,
            "broken": None if self.broken is None else self.broken.as_dict(),
        }


def verify(conn: Connection) -> ChainReport:
    """Walk the chain from its base to the head; name the first entry that breaks it.

    Entries are read by seq up to the head read first, so entries appended meanwhile by
    another process are not mistaken for a head that lies.
    """
    head = read_head(conn)
    a = t.audit_log.c
    columns = [a.id, a.seq, a.prev_hash, a.hash, *(a[name] for name in FIELDS)]
    if head is None:
        first = conn.execute(select(*columns).order_by(a.seq, a.id).limit(1)).mappings().first()
        if first is None:
            return ChainReport(0, None)
        return ChainReport(0, None, _broken(first, "the chain's head (audit_head) is missing"))
    expected_seq, expected_prev = head.base_seq + 1, head.base_hash
    count, last = 0, head.base_seq
    while True:
        rows = (
            conn.execute(
                select(*columns).where(a.seq > last, a.seq <= head.seq).order_by(a.seq).limit(BATCH)
            )
            .mappings()
            .all()
        )
        for row in rows:
            problem = _check(row, expected_seq, expected_prev)
            if problem is not None:
                return ChainReport(count, head, _broken(row, problem))
            count += 1
            expected_seq, expected_prev = expected_seq + 1, row["hash"]
        if len(rows) < BATCH:
            break
        last = int(rows[-1]["seq"])
    if expected_seq - 1 != head.seq or expected_prev != head.hash:
        if expected_seq - 1 >= head.seq:  # as many entries as the head says: a changed hash
            reason = "the newest entry's hash is not the head's: the newest entry was replaced"
        else:
            reason = (
                f"the head is seq {head.seq} but the log ends at seq {expected_seq - 1}: "
                "the newest entries were deleted"
            )
        return ChainReport(count, head, Broken(None, None, None, None, reason))
    return ChainReport(count, head)


def _check(row: Any, expected_seq: int, expected_prev: str) -> str | None:
    seq = int(row["seq"])
    if seq != expected_seq:
        gap = f"seq {expected_seq}" + (f" to {seq - 1}" if seq - 1 > expected_seq else "")
        return f"the entries before it ({gap}) are missing: deleted"
    if row["prev_hash"] != expected_prev:
        return (
            "its prev_hash is not the hash of the entry before it: that entry was replaced, "
            "or this one inserted"
        )
    if entry_hash(seq, dict(row), row["prev_hash"]) != row["hash"]:
        return "its content does not match its hash: edited after it was written"
    return None


def _broken(row: Any, reason: str) -> Broken:
    return Broken(int(row["id"]), row["seq"], row["ts"], row["action"], reason)
