"""Probes seen from several locations: per-location state, the quorum, silent agents.

Results go in as an agent's would (`agents.service.accept_results`, in a store transaction)
and the alert worker turns the committed flips into alerts, all on a fake clock: what is
asserted is what was committed.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from nachtwacht.agents import engine as agents_engine
from nachtwacht.agents import service
from nachtwacht.clock import FakeClock
from nachtwacht.config import ConfigError
from nachtwacht.config.loader import parse_config
from nachtwacht.engine.runtime import Runtime
from nachtwacht.probes import locations, rollups
from nachtwacht.probes.base import ProbeConfig
from nachtwacht.probes.results import State, Status
from nachtwacht.probes.state import ProbeState
from nachtwacht.problems import Problem
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.conftest import closed_port

OK, CRIT = int(Status.OK), int(Status.CRITICAL)


def site(tmp_path: Path, port: int, down_when: str = '"2 of 3"') -> str:
    return f"""
site: quorum
store: {{url: "sqlite:///{tmp_path / "nw.db"}"}}
spool: {{dir: {tmp_path / "spool"}}}
server: {{location: local, agent_silent_after: 2m}}
people:
  contacts:
    - {{id: olga, name: Olga, roles: [oncall_engineer], email: olga@example.org}}
probes:
  - {{name: shop, kind: tcp, host: 127.0.0.1, port: {port}, interval: 1h, retries: 0,
     locations: [ams, fra, office], down_when: {down_when}}}
  - {{name: other, kind: tcp, host: 127.0.0.1, port: {port}, interval: 1h,
     locations: [fra]}}
"""


@pytest.fixture
async def rt(tmp_path: Path, clock: FakeClock, store: Store):  # noqa: ANN201
    """A runtime on each backend in turn (the combining locks rows: PostgreSQL, MariaDB)."""
    settings = parse_config(site(tmp_path, closed_port()), str(tmp_path / "nachtwacht.yaml"))
    runtime = Runtime.build(settings, store, clock)
    yield runtime
    runtime.spool.close()


def pid(rt: Runtime, name: str) -> int:
    with rt.store.connect() as conn:
        return service.probe_ids(conn, [name])[name]


def post(rt: Runtime, location: str, results: list[tuple[int, str, int]]) -> dict:
    """(seq, probe, status) results from `location`'s agent (a token made for it first)."""
    with rt.store.begin() as conn:
        if location not in {r["location"] for r in service.list_agent_tokens(conn)}:
            service.create_agent_token(conn, location, location, rt.clock.now(), actor="test")
    return _post(rt, location, results)


def _post(rt: Runtime, location: str, results: list[tuple[int, str, int]]) -> dict:
    now = rt.clock.now()
    rows = [
        {"seq": seq, "probe_id": pid(rt, name), "ts": now, "status": status,
         "message": "refused" if status else "connected"}
        for seq, name, status in results
    ]  # fmt: skip
    with rt.store.begin() as conn:
        return service.accept_results(conn, rt.settings, location, rows, now)


def combined(rt: Runtime, name: str = "shop") -> tuple[State, str]:
    with rt.store.connect() as conn:
        row = conn.execute(select(t.probe_state).where(t.probe_state.c.probe_id == pid(rt, name)))
        state = row.one()
    return State(state.state), state.last_message


def firing(rt: Runtime) -> list[str]:
    with rt.store.connect() as conn:
        a = t.alerts.c
        return sorted(conn.execute(select(a.fingerprint).where(a.status == "firing")).scalars())


def test_combine_counts_only_locations_that_can_tell() -> None:
    def at(state: State) -> ProbeState:
        return ProbeState(state, 0.0, 1, 0.0, 0.0, None, None, None, "refused")

    locs = ["ams", "fra", "office"]
    one = {"ams": at(State.CRITICAL), "fra": at(State.OK), "office": at(State.OK)}
    got = locations.combine(one, locs, 2)
    assert got.state is State.DEGRADED and got.message.startswith("degraded from ams")
    two = {**one, "fra": at(State.CRITICAL)}
    assert locations.combine(two, locs, 2).state is State.CRITICAL
    assert locations.combine(two, locs, 3).state is State.DEGRADED
    # the silent location is not down, however its last result read
    assert locations.combine(two, locs, 2, silent={"fra"}).state is State.DEGRADED
    pending = {**one, "fra": at(State.PENDING)}
    assert locations.combine(pending, locs, 2).state is State.PENDING
    assert locations.combine({}, locs, 2).state is State.NEW
    unknown = {loc: at(State.UNKNOWN) for loc in locs}
    assert locations.combine(unknown, locs, 2).state is State.UNKNOWN


def test_down_when_is_k_of_n_with_n_the_locations() -> None:
    from nachtwacht.probes.kinds.tcp import Config

    base = {"name": "x", "kind": "tcp", "host": "h", "port": 1}
    assert Config(**base, locations=["a", "b", "c"]).quorum == 2  # a majority by default
    assert Config(**base, locations=["a", "b"]).quorum == 2
    assert Config(**base, locations=["a", "b", "c"], down_when="1 of 3").quorum == 1
    for bad in ("2 of 2", "0 of 3", "4 of 3", "two of three"):
        with pytest.raises(ValueError, match="down_when"):
            Config(**base, locations=["a", "b", "c"], down_when=bad)
    with pytest.raises(ValueError, match="needs locations"):
        Config(**base, down_when="1 of 1")
    with pytest.raises(ValueError, match="once"):
        Config(**base, locations=["a", "a"])
    assert isinstance(Config(**base), ProbeConfig) and Config(**base).locations == []


def test_a_heartbeat_has_no_locations(tmp_path: Path) -> None:
    text = (
        "probes:\n  - {name: hb, kind: heartbeat, token: tok-123456789, period: 1h,"
        " locations: [ams]}\n"
    )
    with pytest.raises(ConfigError, match="a heartbeat has no locations"):
        parse_config(text, str(tmp_path / "nachtwacht.yaml"))


async def test_two_of_three_pages_only_when_two_locations_fail(rt: Runtime) -> None:
    post(rt, "ams", [(1, "shop", OK)])
    post(rt, "fra", [(1, "shop", OK)])
    post(rt, "office", [(1, "shop", OK)])
    assert combined(rt)[0] is State.OK
    rt.clock.advance(60)
    post(rt, "ams", [(2, "shop", CRIT)])
    state, message = combined(rt)
    assert state is State.DEGRADED and message.startswith("degraded from ams"), message
    await rt.alerting.drain()
    assert firing(rt) == []  # one location is no outage
    rt.clock.advance(60)
    post(rt, "fra", [(2, "shop", CRIT)])
    state, message = combined(rt)
    assert state is State.CRITICAL and message.startswith("down from ams, fra"), message
    await rt.alerting.drain()
    assert firing(rt) == ["probe:shop"]
    rt.clock.advance(60)
    post(rt, "ams", [(3, "shop", OK)])  # back below the quorum: the page resolves
    assert combined(rt)[0] is State.DEGRADED
    await rt.alerting.drain()
    assert firing(rt) == []
    with rt.store.connect() as conn:
        per = locations.location_states(conn, pid(rt, "shop"))
    assert {k: v.state for k, v in per.items()} == {
        "ams": State.OK, "fra": State.CRITICAL, "office": State.OK,
    }  # fmt: skip


async def test_retries_apply_per_location(rt: Runtime, tmp_path: Path) -> None:
    settings = parse_config(
        site(tmp_path, closed_port()).replace("retries: 0", "retries: 1"),
        str(tmp_path / "nachtwacht.yaml"),
    )
    object.__setattr__(rt, "settings", settings)
    post(rt, "ams", [(1, "shop", CRIT)])
    post(rt, "fra", [(1, "shop", CRIT)])
    assert combined(rt)[0] is State.PENDING  # two pending locations: not confirmed yet
    post(rt, "ams", [(2, "shop", CRIT)])
    assert combined(rt)[0] is State.PENDING
    post(rt, "fra", [(2, "shop", CRIT)])
    assert combined(rt)[0] is State.CRITICAL


def test_a_retried_batch_is_stored_once_and_in_order(rt: Runtime) -> None:
    first = post(rt, "ams", [(1, "shop", OK), (2, "shop", CRIT), (3, "shop", OK)])
    assert (first["stored"], first["duplicates"], first["last_seq"]) == (3, 0, 3)
    again = post(rt, "ams", [(2, "shop", CRIT), (3, "shop", OK), (4, "shop", OK)])
    assert (again["stored"], again["duplicates"], again["last_seq"]) == (1, 2, 4)
    with rt.store.connect() as conn:
        r = t.results.c
        seqs = list(conn.execute(select(r.seq).where(r.location == "ams").order_by(r.id)).scalars())
    assert seqs == [1, 2, 3, 4]
    with pytest.raises(Problem, match="increasing"):
        post(rt, "ams", [(6, "shop", OK), (5, "shop", OK)])
    # a probe of another location is not this agent's to report
    refused = post(rt, "ams", [(7, "other", CRIT)])
    assert (refused["stored"], refused["refused"]) == (0, 1)
    assert combined(rt, "other")[0] is State.NEW


async def test_a_silent_agent_is_an_alert_and_its_location_unknown(rt: Runtime) -> None:
    for loc in ("ams", "fra", "office"):
        post(rt, loc, [(1, "shop", OK)])
    rt.clock.advance(30)
    post(rt, "ams", [(2, "shop", CRIT)])
    post(rt, "office", [(2, "shop", CRIT)])
    await rt.alerting.drain()
    assert firing(rt) == ["probe:shop"]
    # office falls silent: its last "critical" no longer counts, and nobody is paged for it
    rt.clock.advance(60)
    post(rt, "ams", [(3, "shop", CRIT)])
    post(rt, "fra", [(2, "shop", OK)])
    assert agents_engine.check_silence(rt, rt.clock.now()) == 0  # 90 s: not yet
    rt.clock.advance(61)
    post(rt, "ams", [(4, "shop", CRIT)])
    post(rt, "fra", [(3, "shop", OK)])
    assert agents_engine.check_silence(rt, rt.clock.now()) == 1
    assert agents_engine.check_silence(rt, rt.clock.now()) == 0  # raised once
    state, message = combined(rt)
    assert state is State.DEGRADED and "office silent" in message, message
    await rt.alerting.drain()
    assert firing(rt) == ["agent:office"]
    with rt.store.connect() as conn:
        a = t.alerts.c
        title = conn.execute(select(a.title).where(a.fingerprint == "agent:office")).scalar()
        agents = service.agent_overview(conn, rt.clock.now(), 120)
    assert title == "agent office silent for 2 min"
    assert [(x["location"], x["silent"]) for x in agents] == [
        ("ams", False), ("fra", False), ("office", True),
    ]  # fmt: skip
    # office speaks again: its alert resolves, and its results count again
    rt.clock.advance(10)
    post(rt, "office", [(3, "shop", CRIT)])
    assert combined(rt)[0] is State.CRITICAL
    await rt.alerting.drain()
    assert firing(rt) == ["probe:shop"]


def test_locations_reporting_at_once_are_combined_without_losing_one(rt: Runtime) -> None:
    """Two agents' results for one probe, stored concurrently (as by two server processes):
    each combines what the other committed, so two failing locations make it critical."""
    for loc in ("ams", "fra", "office"):
        post(rt, loc, [(1, "shop", OK)])
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def report(loc: str) -> None:
        try:
            barrier.wait(10)
            for seq in range(2, 12):
                post(rt, loc, [(seq, "shop", CRIT if seq == 11 else OK)])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=report, args=(loc,)) for loc in ("ams", "fra")]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    assert combined(rt)[0] is State.CRITICAL


def test_a_backlog_older_than_the_rollups_is_folded_into_them(rt: Runtime) -> None:
    """An agent's results delivered after their minute (and hour) was rolled up still count in
    uptime: folded into the rollups, once."""
    start = rt.clock.now()
    shop = pid(rt, "shop")
    post(rt, "ams", [(1, "shop", OK)])
    rt.clock.advance(3 * 3600)
    now = rt.clock.now()
    while rollups.roll_minutes(rt.store, now):
        pass
    while rollups.roll_hours(rt.store, now):
        pass

    def late(seq: int, ts: float, status: int) -> dict:
        return {"seq": seq, "probe_id": shop, "ts": ts, "status": status, "latency_ms": 2.0}

    with rt.store.begin() as conn:
        got = service.accept_results(
            conn, rt.settings, "ams", [late(2, start, CRIT), late(3, start + 60, OK)], now
        )
    assert got["stored"] == 2
    while rollups.roll_minutes(rt.store, now):
        pass
    with rt.store.connect() as conn:
        m, h = t.rollup_minute.c, t.rollup_hour.c
        minutes = conn.execute(
            select(m.bucket, m.n, m.n_ok, m.n_critical, m.latency_max)
            .where(m.probe_id == shop)
            .order_by(m.bucket)
        ).all()
        hours = conn.execute(select(h.n, h.n_critical).where(h.probe_id == shop)).all()
    first = int(start // 60)
    assert [tuple(r) for r in minutes] == [(first, 2, 1, 1, 2.0), (first + 1, 1, 1, 0, 2.0)]
    assert [tuple(r) for r in hours] == [(3, 1)]


async def test_an_agent_that_never_reports_is_silent_after_the_bound(rt: Runtime) -> None:
    """A token made for office and no agent ever started there: the same alert as an agent
    that stopped, not a location quietly missing from every quorum it is part of."""
    with rt.store.begin() as conn:
        service.create_agent_token(conn, "office", "office", rt.clock.now(), actor="test")
    post(rt, "ams", [(1, "shop", OK)])
    rt.clock.advance(90)
    assert agents_engine.check_silence(rt, rt.clock.now()) == 0  # not yet
    rt.clock.advance(31)
    post(rt, "ams", [(2, "shop", OK)])
    assert agents_engine.check_silence(rt, rt.clock.now()) == 1
    assert firing(rt) == ["agent:office"]
    # it starts at last: the alert resolves
    post(rt, "office", [(1, "shop", OK)])
    assert firing(rt) == []


async def test_an_agent_whose_tokens_are_revoked_is_retired_not_silent(rt: Runtime) -> None:
    post(rt, "office", [(1, "shop", OK)])
    rt.clock.advance(200)
    assert agents_engine.check_silence(rt, rt.clock.now()) == 1
    assert firing(rt) == ["agent:office"]
    with rt.store.begin() as conn:
        [token] = service.list_agent_tokens(conn)
        service.revoke_agent_token(conn, token["id"], rt.clock.now(), actor="test")
    rt.clock.advance(10)
    assert agents_engine.check_silence(rt, rt.clock.now()) == 0
    assert firing(rt) == []
    rt.clock.advance(600)
    assert agents_engine.check_silence(rt, rt.clock.now()) == 0  # never silent again


async def test_the_server_is_one_of_the_locations(
    tmp_path: Path, clock: FakeClock, sqlite_store: Store
) -> None:
    """`locations: [local, ams]`: the server's own checks (its scheduler, through the
    LocationSink) and the agent's are combined alike."""
    text = site(tmp_path, closed_port(), '"2 of 2"').replace("[ams, fra, office]", "[local, ams]")
    settings = parse_config(text, str(tmp_path / "nachtwacht.yaml"))
    rt = Runtime.build(settings, sqlite_store, clock)
    try:
        assert rt.here is not None and rt.location_sink is not None
        assert list(rt.here.by_name) == ["shop"] and "shop" not in rt.scheduler.by_name
        await rt.here.run_now(["shop"])  # the port is closed: critical here
        await rt.location_sink.flush()
        assert combined(rt)[0] is State.DEGRADED
        post(rt, "ams", [(1, "shop", CRIT)])
        state, message = combined(rt)
        assert state is State.CRITICAL and message.startswith("down from local, ams"), message
        await rt.alerting.drain()
        assert firing(rt) == ["probe:shop"]
    finally:
        if rt.here is not None:
            await rt.here.close()
        rt.spool.close()
