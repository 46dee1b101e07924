"""Claiming work: the one way two processes on one store agree on who does something.

A claim is a conditional UPDATE of one row: `UPDATE table SET <values> WHERE <its key> AND
<the condition under which the work is still to do>`. The database runs the UPDATEs of two
processes one after the other (a row lock on PostgreSQL/MariaDB, the write lock on SQLite),
and the second one's condition no longer holds once the first committed or holds its lock,
so exactly one of them changes the row. The rowcount decides: 1 is "this process won, do the
work", 0 is "someone else has it (or it is not due any more), do nothing". The values usually
make the condition false (a counter moves, a status changes, a timestamp is written), which is
what makes the claim exclusive; the claim and the work's first writes share one transaction,
so a claim whose work fails rolls back with it.

A claim may carry a lease (`Lease`: an owner and a time until which it holds the row): the row
records `claimed_by` and `claimed_until`, the work is done outside the transaction (sending a
message), and `release` records the outcome only if the row is still this owner's. Once
`claimed_until` has passed (`lease_expired`), the claim's condition may allow any process to
take the row again: the work of a process killed mid-way is then taken over, at least once.
`expire` ends the leases of owners known to be dead at once.

`claim_batch` claims many rows, each on its own (one may be won and the next lost), in key
order, so that two processes claiming overlapping sets lock rows in the same order on
PostgreSQL/MariaDB and never deadlock.

Each claim's condition is the caller's: what "still to do" means is domain knowledge (an
escalation step not fired yet, a watermark not moved, a run still waiting). Used by
incidents/escalation.py, probes/rollups.py, notify/claim.py, errors/alerting.py,
reviews/reminders.py, reviews/followups.py and runbooks/runner.py. tests/test_store_claims.py
holds the contract on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, update


@dataclass(frozen=True)
class Lease:
    """A claim held by `owner` until `until` (epoch seconds); then others may take it over."""

    owner: str
    until: float

    @classmethod
    def of(cls, owner: str, now: float, seconds: float) -> Lease:
        return cls(owner, now + seconds)


def _key(table: Table, row: Any) -> ColumnElement[bool]:
    """`row` is the value of the table's one-column primary key, or a WHERE clause already."""
    if isinstance(row, ColumnElement):
        return row
    [column] = table.primary_key.columns
    return column == row


def claim(
    conn: Connection,
    table: Table,
    row: Any,
    *when: ColumnElement[bool],
    values: Mapping[str, Any],
    lease: Lease | None = None,
) -> bool:
    """Set `values` on `row` if every condition in `when` holds; True if this call won it.

    `row` is a primary-key value (or a WHERE clause matching at most one row). With a `lease`,
    `claimed_by` and `claimed_until` are set too (the table must have both columns).
    """
    changes = dict(values)
    if lease is not None:
        changes.update(claimed_by=lease.owner, claimed_until=lease.until)
    result = conn.execute(update(table).where(_key(table, row), *when).values(**changes))
    return result.rowcount == 1


def claim_batch(
    conn: Connection,
    table: Table,
    rows: Mapping[Any, Mapping[str, Any]],
    *when: ColumnElement[bool],
    leases: Mapping[Any, Lease] | None = None,
) -> list[Any]:
    """Claim each row (key → its values) under the same conditions, in key order.

    Returns the keys this call won, in that order; the others were someone else's.
    """
    won = []
    for key in sorted(rows):
        lease = leases.get(key) if leases is not None else None
        if claim(conn, table, key, *when, values=rows[key], lease=lease):
            won.append(key)
    return won


def held_by(table: Table, owner: str) -> ColumnElement[bool]:
    """The row is (still) claimed by `owner`."""
    return table.c.claimed_by == owner


def lease_expired(table: Table, now: float) -> ColumnElement[bool]:
    """The row's lease ran out: its owner is presumed dead and the row may be taken over."""
    return table.c.claimed_until < now


def release(
    conn: Connection,
    table: Table,
    row: Any,
    owner: str,
    *when: ColumnElement[bool],
    values: Mapping[str, Any],
) -> bool:
    """Record the outcome of `owner`'s claimed work and end the lease, if the row is still theirs.

    False: the lease ran out and another process took the row over; its outcome counts.
    """
    changes = {"claimed_until": None, **values}
    return claim(conn, table, row, held_by(table, owner), *when, values=changes)


def expire(
    conn: Connection, table: Table, owners: Iterable[str], now: float, *when: ColumnElement[bool]
) -> int:
    """End the leases of `owners` (known to be dead) now; return the number of rows freed."""
    dead = list(owners)
    if not dead:
        return 0
    result = conn.execute(
        update(table).where(table.c.claimed_by.in_(dead), *when).values(claimed_until=now - 0.001)
    )
    return result.rowcount
