"""store/claims.py: a conditional UPDATE that one process wins, on every backend."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select

from nachtwacht.notify.outbox import OutboundMessage, enqueue
from nachtwacht.store import claims
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store

NOW = 1_800_000_000.0
o = t.outbox.c


def _rows(store: Store, n: int) -> list[int]:
    messages = [
        OutboundMessage(f"k{k}", "test", "hook", "subject", "body", contact=None) for k in range(n)
    ]
    with store.begin() as conn:
        return enqueue(conn, messages, NOW)


def _row(store: Store, row_id: int) -> dict:
    with store.connect() as conn:
        return dict(conn.execute(select(t.outbox).where(o.id == row_id)).mappings().one())


def test_a_claim_is_won_once_and_its_condition_decides(store: Store) -> None:
    [row] = _rows(store, 1)
    pending = o.status == "pending"
    with store.begin() as conn:
        assert claims.claim(conn, t.outbox, row, pending, values={"status": "sending"})
        assert not claims.claim(conn, t.outbox, row, pending, values={"status": "sending"})
        assert not claims.claim(conn, t.outbox, row + 1000, values={"status": "sending"})
    assert _row(store, row)["status"] == "sending"


def test_a_claim_by_a_non_integer_key_or_a_where_clause(store: Store) -> None:
    with store.begin() as conn:
        store.set_meta(conn, "mark", 5, NOW)
        meta = t.engine_meta.c
        assert claims.claim(
            conn, t.engine_meta, "mark", meta.value == "5", values={"value": "9", "updated_at": NOW}
        )
        assert not claims.claim(
            conn, t.engine_meta, "mark", meta.value == "5", values={"value": "7", "updated_at": NOW}
        )
        assert claims.claim(
            conn, t.engine_meta, meta.key == "mark", values={"value": "10", "updated_at": NOW}
        )
        assert store.get_meta(conn, "mark") == 10


def test_a_lease_is_recorded_released_only_by_its_owner_and_taken_over_once_expired(
    store: Store,
) -> None:
    [row] = _rows(store, 1)
    takeable = (o.status == "pending") | (
        (o.status == "sending") & claims.lease_expired(t.outbox, NOW + 30)
    )
    with store.begin() as conn:
        lease = claims.Lease.of("a:1", NOW, 60)
        assert claims.claim(
            conn, t.outbox, row, takeable, values={"status": "sending"}, lease=lease
        )
        # within the lease nobody takes it
        assert not claims.claim(
            conn, t.outbox, row, takeable, values={}, lease=claims.Lease.of("b:2", NOW, 60)
        )
    assert (_row(store, row)["claimed_by"], _row(store, row)["claimed_until"]) == ("a:1", NOW + 60)
    later = (o.status == "sending") & claims.lease_expired(t.outbox, NOW + 61)
    with store.begin() as conn:
        assert claims.claim(
            conn, t.outbox, row, later, values={}, lease=claims.Lease.of("b:2", NOW + 61, 60)
        )
        # the first owner's outcome no longer counts
        assert not claims.release(conn, t.outbox, row, "a:1", values={"status": "sent"})
        assert claims.release(conn, t.outbox, row, "b:2", values={"status": "sent"})
    got = _row(store, row)
    assert (got["status"], got["claimed_by"], got["claimed_until"]) == ("sent", "b:2", None)


def test_claim_batch_claims_each_row_on_its_own_in_key_order(store: Store) -> None:
    ids = _rows(store, 4)
    with store.begin() as conn:
        claims.claim(conn, t.outbox, ids[1], values={"status": "sent"})
        leases = {k: claims.Lease.of("me", NOW, 10 + k) for k in ids}
        won = claims.claim_batch(
            conn,
            t.outbox,
            {k: {"status": "sending"} for k in reversed(ids)},
            o.status == "pending",
            leases=leases,
        )
    assert won == [ids[0], ids[2], ids[3]]
    assert _row(store, ids[3])["claimed_until"] == NOW + 10 + ids[3]
    assert _row(store, ids[1])["claimed_by"] is None


def test_expire_ends_the_leases_of_dead_owners_only(store: Store) -> None:
    ids = _rows(store, 3)
    with store.begin() as conn:
        for k, owner in zip(ids, ("dead:1", "dead:2", "alive:3"), strict=True):
            claims.claim(
                conn,
                t.outbox,
                k,
                values={"status": "sending"},
                lease=claims.Lease.of(owner, NOW, 600),
            )
        assert claims.expire(conn, t.outbox, [], NOW) == 0
        assert claims.expire(conn, t.outbox, ["dead:1", "dead:2"], NOW, o.status == "sending") == 2
    assert [_row(store, k)["claimed_until"] < NOW for k in ids] == [True, True, False]


def test_two_transactions_racing_for_one_row_one_wins(store: Store) -> None:
    """The second UPDATE waits for the first transaction, then finds its condition false."""
    [row] = _rows(store, 1)
    pending = o.status == "pending"
    results: dict[str, bool] = {}
    first_claimed = threading.Event()

    def second() -> None:
        first_claimed.wait(10)
        with store.begin() as conn:
            results["second"] = claims.claim(
                conn,
                t.outbox,
                row,
                pending,
                values={"status": "sending"},
                lease=claims.Lease("b", 1),
            )

    thread = threading.Thread(target=second)
    thread.start()
    with store.begin() as conn:
        results["first"] = claims.claim(
            conn, t.outbox, row, pending, values={"status": "sending"}, lease=claims.Lease("a", 1)
        )
        first_claimed.set()
        time.sleep(0.3)  # the second is waiting for this transaction's lock now
    thread.join(30)
    assert results == {"first": True, "second": False}
    assert _row(store, row)["claimed_by"] == "a"
