"""Rollups per minute and hour, and retention, on every store, by fast-forwarding the clock."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from nachtwacht.clock import FakeClock
from nachtwacht.config.schema import RetentionSettings
from nachtwacht.probes import rollups, service
from nachtwacht.probes.base import ProbeConfig
from nachtwacht.probes.registry import kinds
from nachtwacht.probes.service import ResultRow
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store

T0 = 1_800_000_000.0 - (1_800_000_000 % 3600)  # the start of an hour


def _probe(store: Store, now: float) -> int:
    cfg: ProbeConfig = kinds()["tcp"][0](name="p", kind="tcp", host="127.0.0.1", port=1)
    with store.begin() as conn:
        return service.sync_probes(conn, [cfg], now)["p"]


def _results(store: Store, pid: int, rows: list[tuple[float, int, float]]) -> None:
    with store.begin() as conn:
        service.write_batch(
            conn,
            [ResultRow(pid, ts, status, 1.0, latency, 0.0, "m") for ts, status, latency in rows],
            [],
            {},
        )


def test_minute_rollup_counts_statuses_and_latency(store: Store) -> None:
    pid = _probe(store, T0)
    _results(store, pid, [(T0 + 1, 0, 10.0), (T0 + 20, 0, 30.0), (T0 + 40, 2, 50.0)])
    _results(store, pid, [(T0 + 61, 1, 5.0)])
    # the first minute is not rolled up until it has settled
    assert rollups.roll_minutes(store, T0 + 62) == 0
    assert rollups.roll_minutes(store, T0 + 60 + rollups.SETTLE + 1) == 1
    with store.connect() as conn:
        rows = service.rollups(conn, pid, "minute", T0, T0 + 3600)
    assert len(rows) == 1
    first = rows[0]
    assert (first["n"], first["n_ok"], first["n_critical"], first["n_warning"]) == (3, 2, 1, 0)
    assert first["latency_min"] == 10.0 and first["latency_max"] == 50.0
    assert first["latency_avg"] == pytest.approx(30.0)
    assert first["availability"] == pytest.approx(2 / 3)
    assert first["ts"] == T0


def test_rollups_are_idempotent_across_restarts(store: Store) -> None:
    pid = _probe(store, T0)
    _results(store, pid, [(T0 + m * 60 + 5, 0, 1.0) for m in range(10)])
    now = T0 + 10 * 60 + 30
    assert rollups.roll_minutes(store, now) == 10
    assert rollups.roll_minutes(store, now) == 0  # watermark: nothing rolled twice
    with store.connect() as conn:
        n = conn.execute(select(func.sum(t.rollup_minute.c.n))).scalar()
    assert n == 10


def test_hour_rollup_after_the_hour_closes(store: Store) -> None:
    pid = _probe(store, T0)
    _results(store, pid, [(T0 + m * 60 + 1, 0 if m % 2 else 2, float(m)) for m in range(60)])
    _results(store, pid, [(T0 + 3600 + 5, 0, 1.0)])
    clock = FakeClock(T0 + 3600 + 120)
    while rollups.roll_minutes(store, clock.now()):
        pass
    assert rollups.roll_hours(store, clock.now()) == 1
    with store.connect() as conn:
        hours = service.rollups(conn, pid, "hour", T0, T0 + 7200)
    assert len(hours) == 1
    assert (hours[0]["n"], hours[0]["n_ok"], hours[0]["n_critical"]) == (60, 30, 30)
    assert hours[0]["latency_min"] == 0.0 and hours[0]["latency_max"] == 59.0


def test_retention_keeps_raw_results_until_rolled_up_then_deletes_them(store: Store) -> None:
    pid = _probe(store, T0)
    _results(store, pid, [(T0 + 5, 0, 1.0), (T0 + 65, 0, 1.0)])
    keep = RetentionSettings(raw=3600, minute=86400, hour=86400 * 30, state_changes=86400 * 30)
    clock = FakeClock(T0 + 3 * 3600)
    # not rolled up yet: nothing may be deleted, however old
    assert rollups.apply_retention(store, clock.now(), keep)["results"] == 0
    while rollups.roll_minutes(store, clock.now()):
        pass
    deleted = rollups.apply_retention(store, clock.now(), keep)
    assert deleted["results"] == 2
    with store.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.rollup_minute)).scalar() == 2
    # a day and more later the minute rollups go too, the hour rollups stay
    while rollups.roll_hours(store, clock.now()):
        pass
    clock.advance(86400 + 3600)
    deleted = rollups.apply_retention(store, clock.now(), keep)
    assert deleted["rollup_minute"] == 2
    with store.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.rollup_hour)).scalar() == 1
