"""Take something from outside: into the store directly, or into the spool when it cannot.

`accept` is the one rule the ingestion doors (heartbeat pings, external alerts) share:

- when the spool still holds records of the same kind, the new one goes behind them, so the
  store sees them in the order they arrived;
- otherwise it is written directly, in its own transaction, committed before the answer;
- when the store is unavailable it goes to the spool (fsync'd before the answer). If the
  failure came during COMMIT the write may have gone through; the record then says `maybe` and
  its handler checks before writing, so it is stored once.

Either way the sender gets its 200 only once the item is durable somewhere. When the spool
refuses too (full, unwritable) the caller answers 503 and the sender retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection

from nachtwacht.spool.drain import store_unavailable

T = TypeVar("T")


@dataclass
class Accepted(Generic[T]):
    result: T | None  # what the direct write returned (None when spooled)
    spooled: bool


async def accept(
    runtime: Any,
    kind: str,
    work: Callable[[Connection], T],
    record: Callable[[bool], bytes],
) -> Accepted[T]:
    """Run `work(conn)` in one transaction, or spool `record(maybe)`; SpoolError if refused.

    A runtime without a drainer (a router mounted alone in a test) only writes directly.
    """
    drainer = getattr(runtime, "drainer", None)
    committing = [False]

    def run() -> T:
        with runtime.store.begin() as conn:
            out = work(conn)
            committing[0] = True  # the body is done: a failure now is in COMMIT
        return out

    if drainer is None:
        return Accepted(await asyncio.to_thread(run), False)
    if not drainer.pending(kind):
        try:
            return Accepted(await asyncio.to_thread(run), False)
        except Exception as exc:
            if not store_unavailable(exc):
                raise
            drainer.note_unavailable(exc)
            maybe = committing[0]
    else:
        maybe = False
    await runtime.spool_put(kind, record(maybe))
    return Accepted(None, True)
