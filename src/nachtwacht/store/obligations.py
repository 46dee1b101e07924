"""Things that must happen once per key (a handoff's summary, a quarter's re-verification).

`once` inserts the obligation's row if it is missing (the unique key keeps one, whoever
inserts it first) and claims it with a conditional update of `done_at`, in the caller's
transaction: the messages it queues commit with the claim, or neither does. Two engines on one
database both reach the claim; only one of them changes the row (store/claims.py).

Work that cannot share the claim's transaction (a restore test runs for minutes, after the
claim committed) uses `once_leased`: a claim whose work left no proof within its lease is
taken again, so a process killed mid-work does not leave the obligation done-but-undone.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from nachtwacht.store import claims
from nachtwacht.store import tables as t

o = t.readiness_obligations.c


def once(
    conn: Connection, key: str, kind: str, now: float, data: dict[str, Any] | None = None
) -> bool:
    """True when this call claimed `key` (do the work now); False when it was done already."""
    found = conn.execute(select(o.id, o.done_at).where(o.key == key)).first()
    if found is None:
        try:
            with conn.begin_nested():
                conn.execute(
                    insert(t.readiness_obligations).values(
                        key=key[:200],
                        kind=kind,
                        created_at=now,
                        done_at=None,
                        data_json=json.dumps(data or {}, default=str),
                    )
                )
        except IntegrityError:
            return False  # another process inserted it first, and claims it
        found = conn.execute(select(o.id, o.done_at).where(o.key == key)).first()
    if found is None or found.done_at is not None:
        return False
    return claims.claim(
        conn, t.readiness_obligations, found.id, o.done_at.is_(None), values={"done_at": now}
    )


def once_leased(
    conn: Connection, key: str, kind: str, now: float, lease: float, proof_after: float | None
) -> bool:
    """`once`, for work done after the claim's commit (outside its transaction).

    A claim older than `lease` whose work left no proof after it (`proof_after`: when the
    work last finished, None: never) was taken by a process that died: it is claimed again,
    by a conditional update on the old claim's time, so of two engines only one retakes it.
    """
    if once(conn, key, kind, now):
        return True
    found = conn.execute(select(o.id, o.done_at).where(o.key == key)).first()
    if found is None or found.done_at is None or found.done_at > now - lease:
        return False
    if proof_after is not None and proof_after >= found.done_at:
        return False  # done
    return claims.claim(
        conn, t.readiness_obligations, found.id, o.done_at == found.done_at, values={"done_at": now}
    )


def done(conn: Connection, key: str) -> bool:
    row = conn.execute(select(o.done_at).where(o.key == key)).first()
    return row is not None and row.done_at is not None
