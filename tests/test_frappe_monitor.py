"""Tailing a bench's monitor.json.log into request_minutes: real files, a real store."""

from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from nachtwacht.clock import FakeClock
from nachtwacht.engine.runtime import Runtime
from nachtwacht.errors.frappe import engine as frappe_engine
from nachtwacht.errors.frappe.monitor import KEEP_MINUTES, MonitorLogError, MonitorTail
from nachtwacht.errors.frappe.sketch import Sketch
from nachtwacht.errors.models import FrappeMonitorLog
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.helpers import settings_for

SITE = "erp.example.com"


@pytest.fixture(autouse=True)
def _close_tails(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every MonitorTail made in a test closes its files at the end (they are kept open)."""
    made: list[MonitorTail] = []
    init = MonitorTail.__init__

    def tracking(self: MonitorTail, *args: Any, **keys: Any) -> None:
        init(self, *args, **keys)
        made.append(self)

    monkeypatch.setattr(MonitorTail, "__init__", tracking)
    yield
    for tail in made:
        tail.close()


def request_line(
    ts: str, ms: float, status: int = 200, uid: str | None = None, site: str = SITE
) -> str:
    """One line as Frappe's monitor writes it (json.dumps, sorted keys, compact)."""
    entry = {
        "duration": int(ms * 1000),
        "request": {
            "ip": "10.0.0.7",
            "method": "POST",
            "path": "/api/method/frappe.desk.form.save.savedocs",
            "response_length": 512,
            "status_code": status,
        },
        "site": site,
        "timestamp": ts,
        "transaction_type": "request",
        "uuid": uid or str(uuid.uuid4()),
    }
    return json.dumps(entry, sort_keys=True, separators=(",", ":"))


def job_line(ts: str) -> str:
    entry = {
        "duration": 2_500_000,
        "job": {"method": "frappe.email.queue.flush", "scheduled": True, "wait": 1200},
        "site": SITE,
        "timestamp": ts,
        "transaction_type": "job",
        "uuid": str(uuid.uuid4()),
    }
    return json.dumps(entry, sort_keys=True, separators=(",", ":"))


def minute_of(hh_mm: str) -> int:
    h, m = map(int, hh_mm.split(":"))
    return int(datetime(2027, 1, 15, h, m, tzinfo=UTC).timestamp() // 60)


def rows(store: Store, source: str = "erp") -> dict[int, dict[str, float | int | None]]:
    rm = t.request_minutes
    with store.connect() as conn:
        result = conn.execute(select(rm).where(rm.c.source == source).order_by(rm.c.minute))
        return {
            r.minute: {
                "n": r.n,
                "n_5xx": r.n_5xx,
                "n_4xx": r.n_4xx,
                "sum": r.duration_sum_ms,
                "max": r.duration_max_ms,
                "p95": r.p95_ms,
            }
            for r in result
        }


def append(path: Path, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text)


def status_of(ms: int) -> int:
    return 500 if ms in (3, 7, 15) else 404 if ms in (4, 9, 18) else 200


A, B = minute_of("07:58"), minute_of("07:59")


def a_line(ms: int, uid: str | None = None) -> str:
    # minute A: durations 1..20 ms, one request per millisecond
    return request_line(f"2027-01-15 07:58:{ms:02d}.{ms:06d}", ms, status_of(ms), uid)


async def test_requests_per_minute_across_reads_rotation_and_a_restart(
    store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    log = tmp_path / "logs" / "monitor.json.log"
    log.parent.mkdir()
    # history from before Nachtwacht looked: not counted
    log.write_text(a_line(1) + "\n" + request_line("2027-01-15 07:58:00", 900.0) + "\n")
    cfg = FrappeMonitorLog(name="erp", path=str(log), site=SITE)
    tail = MonitorTail(cfg, store)
    assert await tail.tick(clock.now()) == 0

    # 12 requests, a job, another site's request, a broken line, and half of request 13
    line13 = a_line(13, uid="8f1c2d3e-0000-4000-8000-000000000013")
    append(
        log,
        "".join(a_line(ms) + "\n" for ms in range(1, 13))
        + job_line("2027-01-15 07:58:30")
        + "\n"
        + request_line("2027-01-15 07:58:31", 4000.0, site="other.example.com")
        + "\n"
        + '{"duration": 12, "request": \n'
        + line13[:40],
    )
    clock.advance(15)
    assert await tail.tick(clock.now()) == 12
    assert rows(store) == {
        A: {"n": 12, "n_5xx": 2, "n_4xx": 2, "sum": 78.0, "max": 12.0, "p95": 12.0}
    }
    assert (tail.jobs, tail.other_sites, tail.bad) == (1, 1, 1)

    # the rest of 13; Frappe's next flush repeats its last line (13); then 14..17 and minute B
    append(
        log,
        line13[40:]
        + "\n"
        + line13
        + "\n"
        + "".join(a_line(ms) + "\n" for ms in range(14, 18))
        + request_line("2027-01-15 07:59:01.5", 100.0)
        + "\n",
    )
    clock.advance(15)
    assert await tail.tick(clock.now()) == 6
    assert tail.repeats == 1
    assert rows(store)[A] == {
        "n": 17,
        "n_5xx": 3,
        "n_4xx": 2,
        "sum": 153.0,
        "max": 17.0,
        "p95": 17.0,
    }

    # logrotate renames the file; a flush still writing appends 18 to the old one
    os.rename(log, log.with_name("monitor.json.log.1"))
    append(log.with_name("monitor.json.log.1"), a_line(18) + "\n")
    log.write_text(
        a_line(20)
        + "\n"
        + request_line("2027-01-15 07:59:40", 300.0, 500)
        + "\n"
        + request_line("2027-01-15 07:59:50.000000+00:00", 50.0)
        + "\n"
    )
    clock.advance(15)
    assert await tail.tick(clock.now()) == 1 + 3  # the old file to its end, the new from its start
    assert (rows(store)[A]["n"], rows(store)[B]["n"]) == (17 + 2, 1 + 2)
    # the flush appends 19 to the old file after that read: it is still open, so 19 counts
    append(log.with_name("monitor.json.log.1"), a_line(19) + "\n")
    clock.advance(15)
    assert await tail.tick(clock.now()) == 1
    assert tail.tailer is not None and tail.tailer.rotated == 1
    clock.advance(15)
    assert await tail.tick(clock.now()) == 0  # quiet for a tick: let go
    assert tail.tailer.rotated == 0
    final = {
        A: {"n": 20, "n_5xx": 3, "n_4xx": 3, "sum": 210.0, "max": 20.0, "p95": 19.0},
        B: {"n": 3, "n_5xx": 1, "n_4xx": 0, "sum": 450.0, "max": 300.0, "p95": 300.0},
    }
    assert rows(store) == final

    # restart: a new tail resumes from the stored offset, counting nothing twice
    tail.close()
    tail = MonitorTail(cfg, store)
    clock.advance(15)
    assert await tail.tick(clock.now()) == 0
    assert rows(store) == final
    append(log, request_line("2027-01-15 07:59:55", 10.0, 404) + "\n")
    clock.advance(15)
    assert await tail.tick(clock.now()) == 1
    assert rows(store)[B] == {
        "n": 4,
        "n_5xx": 1,
        "n_4xx": 1,
        "sum": 460.0,
        "max": 300.0,
        "p95": 300.0,
    }


async def test_copytruncate_and_a_file_that_appears_later_are_read_from_the_start(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    log = tmp_path / "monitor.json.log"
    tail = MonitorTail(FrappeMonitorLog(name="erp", path=str(log)), sqlite_store)
    with pytest.raises(MonitorLogError, match=f"monitor log {log} not found"):
        await tail.tick(clock.now())
    log.write_text("".join(request_line("2027-01-15 07:59:10", ms) + "\n" for ms in (5, 6, 7)))
    assert await tail.tick(clock.now()) == 3
    # copytruncate: the same file, emptied and written again
    with open(log, "r+") as fh:
        fh.truncate(0)
    append(log, request_line("2027-01-15 07:59:20", 8.0, 502) + "\n")
    assert await tail.tick(clock.now()) == 1
    assert rows(sqlite_store) == {
        B: {"n": 4, "n_5xx": 1, "n_4xx": 0, "sum": 26.0, "max": 8.0, "p95": 8.0}
    }


async def test_a_minute_older_than_the_sketch_window_keeps_exact_counts(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    log = tmp_path / "monitor.json.log"
    log.write_text("".join(a_line(ms) + "\n" for ms in range(1, 21)))
    tail = MonitorTail(FrappeMonitorLog(name="erp", path=str(log), from_start=True), sqlite_store)
    assert await tail.tick(clock.now()) == 20
    key = f"frappe.monitor.m{A}.erp"
    with sqlite_store.connect() as conn:
        assert sqlite_store.get_meta(conn, key) is not None
    # a request KEEP_MINUTES + 1 minutes later: minute A's sketch is dropped
    later = datetime.fromtimestamp((A + KEEP_MINUTES + 1) * 60, UTC).strftime("%Y-%m-%d %H:%M:%S")
    append(log, request_line(later, 3.0) + "\n")
    assert await tail.tick(clock.now()) == 1
    with sqlite_store.connect() as conn:
        assert sqlite_store.get_meta(conn, key) is None
        assert sqlite_store.get_meta(conn, "frappe.monitor.erp")["minutes"] == [
            A + KEEP_MINUTES + 1
        ]
    # a straggler for minute A: n, sums and max stay exact, p95 becomes an upper bound
    append(log, a_line(25) + "\n")
    assert await tail.tick(clock.now()) == 1
    assert rows(sqlite_store)[A] == {
        "n": 21,
        "n_5xx": 3,
        "n_4xx": 3,
        "sum": 235.0,
        "max": 25.0,
        "p95": 25.0,
    }


def test_the_sketch_is_exact_when_small_and_within_one_percent_when_large() -> None:
    rng = random.Random(7)
    values = [int(rng.lognormvariate(11, 1.2)) + 1 for _ in range(20_000)]  # µs, ~60 ms median
    exact = sorted(values)[int(0.95 * len(values) + 0.999999) - 1]
    halves = Sketch(), Sketch()
    for i, v in enumerate(values):
        halves[i % 2].add(v)
    assert halves[0].exact is None  # thousands of distinct values: bucketed
    restored = Sketch.load(json.loads(json.dumps(halves[0].dump())))
    assert restored is not None
    restored.merge(halves[1])
    estimate = restored.quantile(0.95)
    assert estimate is not None and abs(estimate - exact) / exact <= 0.01
    small = Sketch()
    for v in (5, 1, 4, 2, 3):
        small.add(v)
    assert small.exact is not None and small.quantile(0.95) == 5.0 and small.quantile(0.5) == 3.0


async def test_a_missing_log_shows_in_module_health(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    missing = tmp_path / "bench" / "logs" / "monitor.json.log"
    yaml = f"""
errors:
  frappe_monitor_logs:
    - name: erp
      path: {missing}
      interval: 10s
"""
    rt = Runtime.build(settings_for(yaml, sqlite_store.url), sqlite_store, clock)
    try:
        frappe_engine.install(rt)
        assert rt.engine.modules["frappe_monitor:erp"].interval == 10.0
        assert not await rt.engine.tick_once("frappe_monitor:erp")
        health = rt.engine.modules["frappe_monitor:erp"].health
        assert health.last_error == f"MonitorLogError: monitor log {missing} not found"
        missing.parent.mkdir(parents=True)
        missing.write_text(request_line("2027-01-15 07:59:10", 5.0) + "\n")
        assert await rt.engine.tick_once("frappe_monitor:erp")
        assert rows(sqlite_store)[B]["n"] == 1
    finally:
        await rt.stop()


async def test_a_failed_commit_reads_the_same_lines_again_across_a_rotation(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "monitor.json.log"
    log.write_text("")
    tail = MonitorTail(FrappeMonitorLog(name="erp", path=str(log)), sqlite_store)
    assert await tail.tick(clock.now()) == 0
    append(log, request_line("2027-01-15 07:59:10", 5.0) + "\n")
    os.rename(log, log.with_name("monitor.json.log.1"))
    log.write_text(request_line("2027-01-15 07:59:20", 6.0) + "\n")
    real = tail._commit

    def broken(*args: object) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(tail, "_commit", broken)
    with pytest.raises(RuntimeError):
        await tail.tick(clock.now())
    monkeypatch.setattr(tail, "_commit", real)
    assert await tail.tick(clock.now()) == 2  # both files again, from the committed position
    assert await tail.tick(clock.now()) == 0
    assert rows(sqlite_store)[B]["n"] == 2
