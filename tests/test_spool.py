"""The spool: durable appends, torn tails cut off, ordered exactly-once draining."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import Connection, func, select

from nachtwacht.clock import FakeClock
from nachtwacht.spool.drain import Drainer
from nachtwacht.spool.log import SpoolError, SpoolFull, SpoolLog
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store


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
