"""Several processes on one store (ADR 0024): the division, the liveness rule, the member rows.

Fast: a fake clock and in-process `Membership` objects (distinct member ids stand for distinct
processes) on SQLite and on real PostgreSQL. The real `serve` processes killed with SIGKILL are
in test_members_pg.py.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from nachtwacht.cli.main import app
from nachtwacht.clock import FakeClock
from nachtwacht.engine.members import DEAD_AFTER, FENCE_AFTER, Membership, refuse_second
from nachtwacht.engine.ownership import MemberRow, Observer, owned_by, owner_of
from nachtwacht.engine.runtime import Runtime
from nachtwacht.probes.locations import states_at
from nachtwacht.probes.results import State
from nachtwacht.problems import Problem
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.conftest import Templates, closed_port, migrated_store
from tests.helpers import settings_for

SETTINGS = "site: members\n"


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(
    request: pytest.FixtureRequest, tmp_path: Path, migrated_templates: Templates
) -> Iterator[Store]:
    yield from migrated_store(migrated_templates, request.param, tmp_path)


@pytest.fixture
def pg_store(tmp_path: Path, migrated_templates: Templates) -> Iterator[Store]:
    yield from migrated_store(migrated_templates, "postgresql", tmp_path)


# -- the division ---------------------------------------------------------------------------


def test_each_probe_has_exactly_one_owner_and_a_join_moves_only_a_share() -> None:
    probes = range(1, 3001)
    two = ["a:1", "b:2"]
    parts = [owned_by(m, two, probes) for m in two]
    assert parts[0].isdisjoint(parts[1]) and parts[0] | parts[1] == set(probes)
    assert 1300 < len(parts[0]) < 1700  # about half each
    assert all(owner_of(p, two) == ("a:1" if p in parts[0] else "b:2") for p in range(1, 200))
    three = [*two, "c:3"]
    after = {m: owned_by(m, three, probes) for m in three}
    # only the newcomer's share moved; a's and b's other probes stayed where they were
    assert after["a:1"] <= parts[0] and after["b:2"] <= parts[1]
    assert 800 < len(after["c:3"]) < 1200
    # not a member of the set (not settled, fenced, web only): owns nothing
    assert owned_by("d:4", three, probes) == set()


def test_a_member_is_dead_after_no_change_for_the_bound_on_the_readers_clock() -> None:
    seen = Observer(dead_after=6.0)
    rows = [MemberRow("a:1", "a", 1, "all", beat=5), MemberRow("b:2", "b", 2, "web", beat=9)]
    seen.observe(rows, 100.0)  # first sight: alive from now, whatever the row's clock says
    assert seen.live_checkers(rows, 100.0, me="c:3") == {"a:1"}  # b is web only
    rows = [MemberRow("a:1", "a", 1, "all", beat=6), rows[1]]
    seen.observe(rows, 104.0)
    assert seen.silent(rows, 106.5, me="c:3") == [rows[1]]  # b's beat stood still 6.5 s
    assert seen.alive("a:1", 110.0) and not seen.alive("a:1", 110.5)


# -- member rows on the store -----------------------------------------------------------------


def member(store: Store, me: str, role: str = "all") -> Membership:
    # a host of its own: the pid in `me` runs nowhere here, which on our host means "gone"
    host, pid = me.rsplit(":", 1)
    settings = settings_for(SETTINGS, store.url)
    return Membership(store, settings, role=role, me=me, host=host, pid=int(pid))


def test_a_silent_member_is_declared_dead_once_with_one_alert(
    pg_store: Store, clock: FakeClock
) -> None:
    a, b, c = (member(pg_store, f"host-{n}:{100 + i}") for i, n in enumerate("abc"))
    for m in (a, b, c):
        m.join(clock.now())
    for _ in range(3):
        clock.advance(1.5)
        for m in (a, b, c):
            m.beat_once(clock.now())
    assert b.checkers(clock.now()) == {a.me, b.me, c.me}
    # c is killed: only a and b beat on; both see it silent, one of them wins its death
    with pg_store.begin() as conn:
        conn.execute(
            t.outbox.insert().values(
                kind="emergency_alert",
                channel="hook",
                address="x",
                subject="s",
                body="b",
                idempotency_key="k1",
                status="sending",
                created_at=clock.now(),
                next_attempt_at=clock.now(),
                attempts=1,
                claimed_by=c.me,
                claimed_until=clock.now() + 600,
            )
        )
    for _ in range(6):  # 9 s: more than DEAD_AFTER after the last change either saw
        clock.advance(1.5)
        a.beat_once(clock.now())
        b.beat_once(clock.now())
    assert a.declared + b.declared == 1
    assert a.checkers(clock.now()) == b.checkers(clock.now()) == {a.me, b.me}
    with pg_store.connect() as conn:
        alerts = conn.execute(select(t.alerts.c.fingerprint, t.alerts.c.status)).all()
        lease = conn.execute(select(t.outbox.c.claimed_until)).scalar_one()
        dead = conn.execute(select(t.members.c.dead_at).where(t.members.c.id == c.me)).scalar()
    assert alerts == [(f"member:{c.me}", "firing")]
    assert lease < clock.now()  # its message is due for the live members now
    assert dead is not None
    # c comes back (it was only cut off): it joins again and its alert resolves
    c.beat_once(clock.now())
    with pg_store.connect() as conn:
        assert conn.execute(select(t.alerts.c.status)).scalar_one() == "resolved"
    assert c.checkers(clock.now()) == {a.me, b.me}  # it settles before checking again


def test_a_member_that_cannot_write_its_heartbeat_stops_claiming(
    any_store: Store, clock: FakeClock
) -> None:
    m = member(any_store, "host-a:1")
    m.join(clock.now())
    assert m.active(clock.now()) and m.checkers(clock.now()) == {m.me}
    clock.advance(FENCE_AFTER - 1)
    assert not m.fence(clock.now(), "connection refused")  # still inside the bound
    clock.advance(1.5)
    assert m.fence(clock.now(), "connection refused")
    assert not m.active(clock.now()) and m.checkers(clock.now()) == set()
    assert m.snapshot(clock.now())["problem"].startswith("not a member")
    m.beat_once(clock.now())  # the store answers again
    assert m.active(clock.now()) and m.problem is None


def test_sqlite_refuses_a_second_process(sqlite_store: Store, clock: FakeClock) -> None:
    # our parent runs on this host: a member row of it with a fresh heartbeat is a process
    other = member(sqlite_store, f"{socket.gethostname()}:{os.getppid()}")
    other.join(clock.now())
    with pytest.raises(Problem, match="SQLite holds one process.*use PostgreSQL for several"):
        refuse_second(sqlite_store, "here:1", clock.now())
    # its heartbeat stopped long ago: not a process any more
    refuse_second(sqlite_store, "here:1", clock.now() + DEAD_AFTER + 1)


def test_serve_on_sqlite_says_why_it_refuses(sqlite_store: Store, tmp_path: Path) -> None:
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(f'site: two\nstore: {{url: "{sqlite_store.url}"}}\n')
    other = member(sqlite_store, f"{socket.gethostname()}:{os.getppid()}")
    other.join(time.time())
    result = CliRunner().invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 1
    assert "SQLite holds one process" in result.output
    assert "docs/operations.md" in result.output


# -- ownership in the runtime -----------------------------------------------------------------


def probes_yaml(port: int, n: int) -> str:
    lines = ["engine: {startup_spread: 1s}", "probes:"]
    for i in range(n):
        lines.append(
            f"  - {{name: p{i}, kind: tcp, host: 127.0.0.1, port: {port}, interval: 10s,"
            " retries: 0, component: c}"
        )
    return "\n".join(lines) + "\n"


def located_yaml(port: int, n: int) -> str:
    """Probes also checked at an agent's location: the server checks them in `here`."""
    return "".join(
        f"  - {{name: l{i}, kind: tcp, host: 127.0.0.1, port: {port}, interval: 10s,"
        " retries: 0, component: c, locations: [local, ams]}\n"
        for i in range(n)
    )


async def test_an_adopted_probe_goes_on_from_the_committed_state(
    pg_store: Store, clock: FakeClock
) -> None:
    settings = settings_for(probes_yaml(closed_port(), 6), pg_store.url)
    rt = Runtime.build(settings, pg_store, clock)
    assert len(rt.scheduler.slots) == 6  # alone: everything at once
    clock.advance(2)
    await rt.scheduler.run_due()
    await rt.alerting.drain()
    with pg_store.connect() as conn:
        firing = conn.execute(select(t.alerts.c.id)).all()
    assert len(firing) == 6  # all six down and paged once
    # another member owns them for a while; they come back: state CRITICAL, not NEW
    rt.scheduler.set_owned(set(), {})
    assert rt.scheduler.slots == {}
    with pg_store.connect() as conn:
        from nachtwacht.probes import service

        states = service.load_states(conn, rt.scheduler.configs)
    added, removed = rt.scheduler.set_owned(set(rt.scheduler.configs), states)
    assert len(added) == 6 and not removed
    assert all(s.state.state is State.CRITICAL for s in rt.scheduler.slots.values())
    # next due within the adoption spread, not a whole interval later
    assert all(s.due <= clock.now() + 3.0 for s in rt.scheduler.slots.values())
    clock.advance(10)
    await rt.scheduler.run_due()
    await rt.alerting.drain()
    with pg_store.connect() as conn:
        assert len(conn.execute(select(t.alerts.c.id)).all()) == 6  # no second alert
        assert not conn.execute(select(t.probe_flips)).all()
    await rt.stop()
    with pg_store.connect() as conn:
        assert conn.execute(select(t.members)).all() == []  # a clean stop leaves no row


async def test_two_members_divide_the_probes_and_one_takes_over_the_others(
    pg_store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    port = closed_port()
    a = Runtime.build(settings_for(probes_yaml(port, 40), pg_store.url), pg_store, clock)
    assert a.membership is not None and a.members is not None
    spool = f"spool: {{dir: {tmp_path / 'b-spool'}}}\n"
    b = Runtime.build(settings_for(spool + probes_yaml(port, 40), pg_store.url), pg_store, clock)
    assert b.membership is not None and b.members is not None
    b.membership.me = "other-host:2"  # one process standing in for two
    b.membership.join(clock.now())
    for _ in range(4):
        clock.advance(1.0)
        await a.members.tick(clock.now())
        await b.members.tick(clock.now())
    owned_a, owned_b = set(a.scheduler.slots), set(b.scheduler.slots)
    assert owned_a.isdisjoint(owned_b) and len(owned_a | owned_b) == 40
    assert 8 < len(owned_a) < 32
    # b stops beating (killed): a takes its probes, with their state, after the bound
    with pg_store.begin() as conn:
        conn.execute(update(t.members).where(t.members.c.id == b.membership.me).values(beat=99))
    for _ in range(int(DEAD_AFTER) + 3):
        clock.advance(1.0)
        await a.members.tick(clock.now())
    assert set(a.scheduler.slots) == owned_a | owned_b
    await a.stop()
    await b.stop()


async def test_two_members_divide_the_checks_at_the_server_location_too(
    pg_store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    """Located probes at `local` are divided like the plain ones: one result stream each."""
    port = closed_port()
    text = probes_yaml(port, 4) + located_yaml(port, 20)
    a = Runtime.build(settings_for(text, pg_store.url), pg_store, clock)
    spool = f"spool: {{dir: {tmp_path / 'b-spool'}}}\n"
    b = Runtime.build(settings_for(spool + text, pg_store.url), pg_store, clock)
    assert a.members is not None and b.membership is not None and b.members is not None
    assert a.here is not None and b.here is not None and b.location_sink is not None
    b.membership.me = "other-host:2"
    b.membership.join(clock.now())
    for _ in range(4):
        clock.advance(1.0)
        await a.members.tick(clock.now())
        await b.members.tick(clock.now())
    here_a, here_b = set(a.here.slots), set(b.here.slots)
    assert here_a.isdisjoint(here_b) and here_a | here_b == set(a.here.configs)
    assert len(a.here.configs) == 20 and here_a and here_b
    assert not set(a.scheduler.slots) & set(a.here.configs)  # plain and located apart
    # b checks its share here: each is down at `local` (retries 0), committed per location
    clock.advance(10)
    await b.here.run_due()
    await b.location_sink.flush()
    with pg_store.connect() as conn:
        committed = states_at(conn, "local", here_b)
    assert set(committed) == here_b
    assert all(s.state is State.CRITICAL for s in committed.values())
    # b is killed: a checks all of them, b's from the state b committed at `local`
    with pg_store.begin() as conn:
        conn.execute(update(t.members).where(t.members.c.id == b.membership.me).values(beat=99))
    for _ in range(int(DEAD_AFTER) + 3):
        clock.advance(1.0)
        await a.members.tick(clock.now())
    assert set(a.here.slots) == here_a | here_b
    for pid in here_b:
        state = a.here.slots[pid].state
        assert state.state is State.CRITICAL and state.last_check == committed[pid].last_check
    assert a.membership is not None and a.membership.probes_owned == 24
    await a.stop()
    await b.stop()


# -- roles ------------------------------------------------------------------------------------


def test_a_worker_answers_only_health_and_a_web_member_runs_no_engine(
    sqlite_store: Store, clock: FakeClock
) -> None:
    from fastapi.testclient import TestClient

    from nachtwacht.web.app import create_app
    from nachtwacht.web.state import state_of

    settings = settings_for(probes_yaml(closed_port(), 2), sqlite_store.url)
    with TestClient(create_app(settings, sqlite_store, clock, role="worker")) as worker:
        assert worker.get("/healthz").status_code in (200, 503)
        refused = worker.get("/api/v1/probes")
        assert refused.status_code == 404 and "worker" in refused.json()["detail"]
        assert worker.get("/login").status_code == 404
    with TestClient(create_app(settings, sqlite_store, clock, role="web")) as web:
        runtime = state_of(web.app).runtime
        assert set(runtime.engine.modules) <= {"members", "spool", "health", "writer"}
        assert runtime._loop_task is None  # no scheduler loop
        assert runtime.scheduler.slots == {}  # a web member checks nothing
        assert web.get("/login").status_code == 200


async def test_check_now_of_a_probe_another_member_checks_answers_here_unrecorded(
    pg_store: Store, clock: FakeClock
) -> None:
    settings = settings_for(probes_yaml(closed_port(), 2), pg_store.url)
    rt = Runtime.build(settings, pg_store, clock)
    rt.scheduler.set_owned(set(), {})  # both are another member's now
    state = await rt.scheduler.check_elsewhere("p0")
    assert state is not None and state.last_status is not None
    assert state.state is State.CRITICAL  # retries 0: the closed port confirms at once
    assert await rt.scheduler.check_elsewhere("nope") is None
    with pg_store.connect() as conn:
        assert conn.execute(select(t.results)).all() == []  # the owner records its checks
    await rt.stop()


async def test_a_member_cut_off_from_the_store_stops_checking_and_paging_and_says_so(
    clock: FakeClock,
) -> None:
    from tests.test_nothing_lost_proxy import TcpProxy, pg_database, proxied_url

    proxy = TcpProxy().start()
    try:
        with pg_database() as name:
            url = proxied_url(proxy, name)
            store = Store(url)
            port = closed_port()
            text = probes_yaml(port, 4) + located_yaml(port, 2)
            rt = Runtime.build(settings_for(text, url), store, clock)
            assert rt.membership is not None and rt.members is not None and rt.here is not None
            await rt.members.tick(clock.now())
            assert len(rt.scheduler.slots) == 4 and not rt.sender.paused
            assert len(rt.here.slots) == 2
            proxy.cut()
            store.engine.dispose()  # pooled connections would fail only on their next use
            for _ in range(6):
                clock.advance(1.0)
                await rt.members.tick(clock.now())
            assert not rt.membership.active(clock.now())
            assert rt.scheduler.slots == {} and rt.here.slots == {} and rt.sender.paused
            assert await rt._escalate(clock.now()) == 0
            problem = rt.membership.snapshot(clock.now())["problem"]
            assert problem is not None and "not a member" in problem
            proxy.restore()
            for _ in range(6):  # the heartbeat is written again, then it settles
                clock.advance(1.0)
                await rt.members.tick(clock.now())
            assert rt.membership.active(clock.now()) and rt.membership.problem is None
            assert len(rt.scheduler.slots) == 4 and not rt.sender.paused
            assert len(rt.here.slots) == 2
            await rt.stop()
            store.dispose()
    finally:
        proxy.close()


async def test_two_members_flips_of_one_outage_raise_one_alert(
    pg_store: Store, clock: FakeClock
) -> None:
    """The takeover's overlap: both owners confirmed the same failure and left a flip each."""
    import asyncio

    from nachtwacht.alerts.worker import Alerting

    settings = settings_for(probes_yaml(closed_port(), 1), pg_store.url)
    rt = Runtime.build(settings, pg_store, clock)
    [pid] = rt.scheduler.configs
    now = clock.now()
    with pg_store.begin() as conn:
        conn.execute(
            update(t.probe_state)
            .where(t.probe_state.c.probe_id == pid)
            .values(state="critical", since=now, last_check=now, failures=1, first_failure=now)
        )
        for _ in range(2):
            conn.execute(
                t.probe_flips.insert().values(
                    probe_id=pid,
                    ts=now,
                    from_state="ok",
                    to_state="critical",
                    first_failure=now,
                    message="connection refused",
                )
            )
    other = Alerting(settings, pg_store, clock, rt.sender, rt.scheduler)
    for _ in range(3):  # a race is a chance: give it a few
        await asyncio.gather(
            asyncio.to_thread(rt.alerting.handle_flips), asyncio.to_thread(other.handle_flips)
        )
    with pg_store.connect() as conn:
        alerts = conn.execute(select(t.alerts.c.status)).scalars().all()
        incidents = conn.execute(select(t.incidents.c.id)).all()
        assert not conn.execute(select(t.probe_flips)).all()
    assert alerts == ["firing"] and len(incidents) == 1
    await rt.stop()


def test_status_and_the_overview_show_the_members(sqlite_store: Store, tmp_path: Path) -> None:
    now = time.time()
    for n, role in ((1, "all"), (2, "web")):
        m = member(sqlite_store, f"host-{n}:{n}", role=role)
        m.join(now)
        m.probes_owned = 7 * n
        m.beat_once(now)
    with sqlite_store.begin() as conn:
        conn.execute(update(t.members).where(t.members.c.id == "host-2:2").values(dead_at=now))
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(f'site: two\nstore: {{url: "{sqlite_store.url}"}}\n')
    result = CliRunner().invoke(app, ["status", "--config", str(config)])
    assert "members" in result.output
    assert "host-1:1" in result.output and "7 probes" in result.output
    assert "DEAD host-2:2" in result.output
    assert result.exit_code >= 1  # a silent member is not all well
    result = CliRunner().invoke(app, ["status", "--json", "--config", str(config)])
    import json

    members = {m["id"]: m for m in json.loads(result.output)["members"]}
    assert members["host-1:1"]["probes_owned"] == 7 and not members["host-1:1"]["dead"]
    assert members["host-2:2"]["role"] == "web" and members["host-2:2"]["dead"]

    from fastapi.testclient import TestClient

    from nachtwacht.web.app import create_app
    from tests.helpers import admin_token

    token = admin_token(sqlite_store, now)
    settings = settings_for("site: two\n", sqlite_store.url)
    app_ = create_app(settings, sqlite_store, FakeClock(now), start_engine=False)
    with TestClient(app_, headers={"Authorization": f"Bearer {token}"}) as client:
        page = client.get("/")
    assert page.status_code == 200
    assert 'data-member="host-1:1"' in page.text and 'data-member="host-2:2"' in page.text
    assert "silent" in page.text
    # the section once, in the page, not also inside <title>
    assert page.text.count('id="members"') == 1
    title = page.text.split("<title>", 1)[1].split("</title>", 1)[0]
    assert "<section" not in title and title.startswith("Overview")
