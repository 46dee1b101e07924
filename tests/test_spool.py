"""The spool: durable appends, torn tails cut off, ordered exactly-once draining."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection, func, select

from nachtwacht.clock import FakeClock
from nachtwacht.spool.drain import Drainer
from nachtwacht.spool.log import SpoolError, SpoolFull, SpoolLog
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store, StoreError


def test_append_read_in_order_across_segments(tmp_path: Path) -> None:
    spool = SpoolLog(tmp_path, segment_bytes=200)
    for i in range(50):
        spool.append("k", f"record {i}".encode())
    assert len(spool.segments()) > 3
    got, after = [], None
    while batch := spool.read(after, limit=7):
        got += [r.payload.decode() for r in batch]
        after = batch[-1].end
    assert got == [f"record {i}" for i in range(50)]


def test_torn_tail_is_cut_and_appends_continue(tmp_path: Path) -> None:
    spool = SpoolLog(tmp_path)
    spool.append("k", b"one")
    spool.append("k", b"two")
    spool.close()
    segment = tmp_path / "0000000001.spool"
    data = segment.read_bytes()
    segment.write_bytes(data[:-2])  # a kill -9 in the middle of the second write
    spool = SpoolLog(tmp_path)
    spool.append("k", b"three")
    assert [r.payload for r in spool.read(None)] == [b"one", b"three"]


def test_second_process_is_refused(tmp_path: Path) -> None:
    first = SpoolLog(tmp_path)
    with pytest.raises(SpoolError, match="in use"):
        SpoolLog(tmp_path)
    first.close()
    SpoolLog(tmp_path)  # free again once the holder closes it


def test_full_spool_refuses_and_keeps_what_it_has(tmp_path: Path) -> None:
    spool = SpoolLog(tmp_path, max_bytes=1 << 20)
    spool.append("k", b"x" * 1000)
    with pytest.raises(SpoolFull):
        spool.append("k", b"y" * (1 << 20))
    assert [len(r.payload) for r in spool.read(None)] == [1000]


async def test_group_commit_acknowledges_every_put(tmp_path: Path) -> None:
    spool = SpoolLog(tmp_path)
    await asyncio.gather(*(spool.put("k", str(i).encode()) for i in range(500)))
    assert sorted(int(r.payload) for r in spool.read(None, limit=1000)) == list(range(500))


def _heartbeat_handler(conn: Connection, payloads: list[bytes], now: float) -> None:
    rows = [json.loads(p) for p in payloads]
    if any(r.get("bad") for r in rows):
        raise ValueError("a record the handler cannot take")
    conn.execute(
        t.heartbeat_pings.insert(),
        [{"token": r["token"], "ts": r["ts"], "event": "success"} for r in rows],
    )


def _count(store: Store) -> list[str]:
    with store.connect() as conn:
        return list(
            conn.execute(select(t.heartbeat_pings.c.token).order_by(t.heartbeat_pings.c.id))
            .scalars()
            .all()
        )


def test_drain_is_ordered_exactly_once_and_survives_restart(
    tmp_path: Path, store: Store, clock: FakeClock
) -> None:
    spool = SpoolLog(tmp_path / "spool", segment_bytes=300)
    for i in range(40):
        spool.append("hb", json.dumps({"token": f"t{i}", "ts": clock.now()}).encode())
    drainer = Drainer(spool, store, clock, batch=15)
    drainer.register("hb", _heartbeat_handler)
    assert drainer.drain_once() == 15
    # a restart: a new drainer reads the cursor from the store and goes on from there
    spool.close()
    spool = SpoolLog(tmp_path / "spool", segment_bytes=300)
    drainer = Drainer(spool, store, clock, batch=15)
    drainer.register("hb", _heartbeat_handler)
    assert drainer.drain_all() == 25
    assert _count(store) == [f"t{i}" for i in range(40)]
    assert drainer.drain_all() == 0
    assert len(spool.segments()) <= 2  # consumed segments are deleted


def test_a_rejected_record_is_buried_not_blocking(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    spool = SpoolLog(tmp_path / "spool")
    spool.append("hb", json.dumps({"token": "a", "ts": 1}).encode())
    spool.append("hb", json.dumps({"token": "b", "ts": 1, "bad": True}).encode())
    spool.append("hb", json.dumps({"token": "c", "ts": 1}).encode())
    drainer = Drainer(spool, sqlite_store, clock)
    drainer.register("hb", _heartbeat_handler)
    drainer.drain_all()
    assert _count(sqlite_store) == ["a", "c"]
    assert drainer.dead == 1
    assert len(list((tmp_path / "spool" / "dead").glob("*.hb"))) == 1


def test_store_down_is_reported_and_nothing_is_lost(tmp_path: Path, clock: FakeClock) -> None:
    broken = Store(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    spool = SpoolLog(tmp_path / "spool")
    spool.append("hb", json.dumps({"token": "a", "ts": 1}).encode())
    (tmp_path / "missing").mkdir(exist_ok=True)
    (tmp_path / "missing" / "x.db").mkdir()  # a directory where the file should be
    drainer = Drainer(spool, broken, clock)
    drainer.register("hb", _heartbeat_handler)
    assert drainer.drain_once() == 0
    assert drainer.store_down_since == clock.now()
    assert drainer.backlog_bytes > 0
    (tmp_path / "missing" / "x.db").rmdir()
    good = Store(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    good.migrate()
    drainer.store = good
    clock.advance(30)
    assert drainer.drain_all() == 1
    assert drainer.store_down_since is None
    with good.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.heartbeat_pings)).scalar() == 1


# -- pending kinds, ambiguous commits, refused records, a replaced spool ---------------------


def test_pending_kinds_follow_the_cursor_and_survive_reopening(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    spool = SpoolLog(tmp_path / "spool")
    drainer = Drainer(spool, sqlite_store, clock)
    drainer.register("hb", _heartbeat_handler)
    assert not drainer.pending("hb")
    spool.append("hb", json.dumps({"token": "a", "ts": 1}).encode())
    assert drainer.pending("hb") and not drainer.pending("alert")
    drainer.drain_all()
    assert not drainer.pending("hb")
    spool.append("hb", json.dumps({"token": "b", "ts": 2}).encode())
    spool.close()
    # a restart: the log remembers what it holds; before the cursor is read, all of it waits
    spool = SpoolLog(tmp_path / "spool")
    assert spool.last_end("hb") == spool.end
    drainer = Drainer(spool, sqlite_store, clock)
    drainer.register("hb", _heartbeat_handler)
    assert drainer.pending("hb")
    assert drainer.drain_all() == 1
    assert not drainer.pending("hb")
    assert _count(sqlite_store) == ["a", "b"]


class _LostCommitAck(Store):
    """A real store whose next COMMIT succeeds but is reported failed (the reply was lost)."""

    lose_next = False

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with super().begin() as conn:
            yield conn
        if self.lose_next:
            self.lose_next = False
            raise StoreError("store x: server closed the connection unexpectedly")


def test_a_commit_whose_answer_was_lost_is_not_written_again(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = _LostCommitAck(f"sqlite:///{tmp_path / 'x.db'}")
    store.migrate()
    spool = SpoolLog(tmp_path / "spool")
    drainer = Drainer(spool, store, clock)
    drainer.register("hb", _heartbeat_handler)
    drainer.drain_once()  # loads the cursor
    for i in range(5):
        spool.append("hb", json.dumps({"token": f"t{i}", "ts": i}).encode())
    store.lose_next = True
    assert drainer.drain_once() == 0  # committed, but it looks like an outage
    assert drainer.store_down_since == clock.now()
    assert drainer.drain_all() == 0  # the cursor, read again, says it is all stored
    assert drainer.store_down_since is None
    assert _count(store) == [f"t{i}" for i in range(5)]


def test_a_record_the_database_refuses_is_buried_while_the_others_are_stored(
    tmp_path: Path, store: Store, clock: FakeClock
) -> None:
    spool = SpoolLog(tmp_path / "spool")
    spool.append("hb", json.dumps({"token": "a", "ts": 1}).encode())
    spool.append("hb", json.dumps({"token": None, "ts": 1}).encode())  # NOT NULL violated
    spool.append("hb", json.dumps({"token": "c", "ts": 1}).encode())
    drainer = Drainer(spool, store, clock)
    drainer.register("hb", _heartbeat_handler)
    drainer.drain_all()
    assert _count(store) == ["a", "c"]
    assert drainer.dead == 1 and drainer.store_down_since is None
    [reason] = (tmp_path / "spool" / "dead").glob("*.json")
    assert "null" in reason.read_text().lower()  # the reason names the refused value


def test_a_replaced_spool_directory_is_replayed_not_skipped(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    first = SpoolLog(tmp_path / "old", segment_bytes=100)
    for i in range(10):
        first.append("hb", json.dumps({"token": f"old{i}", "ts": i}).encode())
    drainer = Drainer(first, sqlite_store, clock)
    drainer.register("hb", _heartbeat_handler)
    drainer.drain_all()
    first.close()
    # the machine was rebuilt: a new, empty spool directory, the same store (and its cursor)
    second = SpoolLog(tmp_path / "new")
    second.append("hb", json.dumps({"token": "new", "ts": 99}).encode())
    drainer = Drainer(second, sqlite_store, clock)
    drainer.register("hb", _heartbeat_handler)
    assert drainer.drain_all() == 1
    assert _count(sqlite_store)[-1] == "new"


def test_an_idle_drainer_notices_the_store_going_and_coming_back(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    drainer = Drainer(SpoolLog(tmp_path / "spool"), sqlite_store, clock, check_every=5)
    assert drainer.drain_once() == 0 and drainer.store_down_since is None
    broken_path = tmp_path / "gone" / "x.db"
    broken_path.mkdir(parents=True)  # a directory where the database file should be
    drainer.store = Store(f"sqlite:///{broken_path}")
    clock.advance(2)
    drainer.drain_once()
    assert drainer.store_down_since is None  # asked at most every check_every seconds
    clock.advance(4)
    drainer.drain_once()
    assert drainer.store_down_since == clock.now()
    assert drainer.snapshot()["store_available"] is False
    drainer.store = sqlite_store
    clock.advance(1)
    drainer.drain_once()
    assert drainer.store_down_since is None and drainer.last_error is None
