"""The flip path's corners: urgent flushes, what leaves a flip, unknown, removed probes.

Each test drives the writer and the alert worker directly (no scheduler loop), so what is
asserted is what got committed, not how fast.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sqlalchemy import select

from nachtwacht.config.loader import parse_config
from nachtwacht.engine.runtime import Runtime
from nachtwacht.probes.results import State, Status
from nachtwacht.probes.service import ResultRow
from nachtwacht.probes.state import ProbeState, Transition
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.conftest import free_port


def site(tmp_path: Path, n: int, port: int, first: str = "p0") -> str:
    names = [first, *[f"p{i}" for i in range(1, n)]]
    probes = "\n".join(
        f"  - {{name: {name}, kind: tcp, host: 127.0.0.1, port: {port}, interval: 1h, "
        f"retries: 0, component: c{i}, severity: 2}}"
        for i, name in enumerate(names)
    )
    return f"""
site: flips
store: {{url: "sqlite:///{tmp_path / "nw.db"}"}}
spool: {{dir: {tmp_path / "spool"}}}
people:
  contacts:
    - {{id: olga, name: Olga, roles: [oncall_engineer], email: olga@example.org}}
probes:
{probes}
"""


def build(tmp_path: Path, n: int = 1, port: int | None = None, first: str = "p0") -> Runtime:
    text = site(tmp_path, n, port or free_port(), first)
    settings = parse_config(text, str(tmp_path / "nachtwacht.yaml"))
    return Runtime.build(settings, Store(settings.store.url))


def done(rt: Runtime) -> None:
    rt.spool.close()
    rt.store.dispose()


def flips(store: Store) -> list:
    with store.connect() as conn:
        return conn.execute(select(t.probe_flips)).all()


def change(rt: Runtime, pid: int, before: State, after: State, now: float) -> None:
    status = Status.OK if after is State.OK else Status.CRITICAL
    row = ResultRow(pid, now, int(status), None, 1.0, 0.0, "refused")
    state = ProbeState(after, now, 1, now, now, status, None, 1.0, "refused")
    rt.writer.add(row, state, Transition(before, after, now, now))


def alerts(store: Store) -> list[tuple[str, str]]:
    query = select(t.alerts.c.status, t.incidents.c.status).join(
        t.incidents, t.incidents.c.id == t.alerts.c.incident_id
    )
    with store.connect() as conn:
        return [tuple(r) for r in conn.execute(query).all()]  # type: ignore[misc]


async def test_a_change_buffered_while_an_urgent_flush_writes_is_flushed_right_after(
    tmp_path: Path,
) -> None:
    rt = build(tmp_path, 2)
    a, b = list(rt.scheduler.slots)
    now = time.time()
    change(rt, a, State.OK, State.CRITICAL, now)
    rt.writer.flush_soon()
    await asyncio.sleep(0)  # the urgent flush has taken its batch and writes in a thread
    assert rt.writer.pending == 0
    change(rt, b, State.OK, State.CRITICAL, now)
    rt.writer.flush_soon()  # must not wait for the writer's next tick
    urgent = rt.writer._urgent
    assert urgent is not None
    await urgent
    assert {f.probe_id for f in flips(rt.store)} == {a, b}
    done(rt)


async def test_only_changes_that_may_alert_leave_a_flip(tmp_path: Path) -> None:
    rt = build(tmp_path, 3)
    a, b, c = list(rt.scheduler.slots)
    now = time.time()
    change(rt, a, State.NEW, State.OK, now)  # every probe at its first check
    change(rt, b, State.OK, State.PENDING, now)  # a retry, not yet confirmed
    change(rt, c, State.OK, State.CRITICAL, now)
    await rt.writer.flush()
    assert [f.probe_id for f in flips(rt.store)] == [c]
    done(rt)


async def test_unknown_after_critical_keeps_the_outage_open(tmp_path: Path) -> None:
    """A check that cannot tell (it could not read its own data, a tool failed) is no
    recovery: the alert and the incident stay open, and reconciling agrees."""
    rt = build(tmp_path)
    (a,) = list(rt.scheduler.slots)
    now = time.time()
    change(rt, a, State.OK, State.CRITICAL, now)
    await rt.alerting.drain()
    change(rt, a, State.CRITICAL, State.UNKNOWN, now + 60)
    await rt.alerting.drain()
    rt.alerting.reconcile()
    assert alerts(rt.store) == [("firing", "investigating")]
    change(rt, a, State.UNKNOWN, State.OK, now + 120)
    await rt.alerting.drain()
    assert alerts(rt.store) == [("resolved", "resolved")]
    done(rt)


async def test_the_alert_of_a_probe_removed_from_the_config_is_resolved(
    tmp_path: Path,
) -> None:
    port = free_port()
    rt = build(tmp_path, 2, port)
    a, _ = list(rt.scheduler.slots)
    change(rt, a, State.OK, State.CRITICAL, time.time())
    await rt.alerting.drain()
    assert alerts(rt.store) == [("firing", "investigating")]
    rt.spool.close()
    later = build(tmp_path, 2, port, first="renamed")  # p0 is gone
    later.alerting.reconcile()
    assert alerts(later.store) == [("resolved", "resolved")]
    with later.store.connect() as conn:
        notes = conn.execute(select(t.incident_events.c.message)).scalars().all()
    assert any("no longer monitored" in (n or "") for n in notes)
    done(later)


async def test_a_flush_cancelled_while_writing_is_written_once(tmp_path: Path) -> None:
    rt = build(tmp_path)
    (a,) = list(rt.scheduler.slots)
    change(rt, a, State.OK, State.CRITICAL, time.time())
    task = asyncio.ensure_future(rt.writer.flush())
    await asyncio.sleep(0)  # the batch is taken and its thread writes
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)  # returns once the thread is done
    await rt.writer.flush()
    assert len(flips(rt.store)) == 1
    with rt.store.connect() as conn:
        assert len(conn.execute(select(t.state_changes)).all()) == 1
    done(rt)


async def test_a_failure_that_recovered_before_its_alert_is_recorded_not_paged(
    tmp_path: Path,
) -> None:
    """After a restart with a spool of results, memory starts older than the spool: the
    replayed failure's flip arrives with no flip for the recovery seen since. The outage is
    recorded (alert and incident, resolved), and no page says CRITICAL for what is over."""
    rt = build(tmp_path)
    (a,) = list(rt.scheduler.slots)
    now = time.time()
    change(rt, a, State.OK, State.CRITICAL, now)
    await rt.writer.flush()
    # the recovery, stored without a transition (memory thought the probe was ok already)
    ok = ProbeState(State.OK, now + 60, 0, None, now + 60, Status.OK, None, 1.0, "connected")
    rt.writer.add(ResultRow(a, now + 60, int(Status.OK), None, 1.0, 0.0, "connected"), ok, None)
    await rt.writer.flush()
    rt.alerting.handle_flips()
    assert alerts(rt.store) == [("resolved", "resolved")]
    with rt.store.connect() as conn:
        statuses = conn.execute(select(t.outbox.c.kind, t.outbox.c.status)).all()
    assert all(status == "cancelled" for _, status in statuses), statuses
    done(rt)
