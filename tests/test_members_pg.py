"""Two real `nachtwacht serve` processes on one real PostgreSQL (ADR 0024).

One test, in phases, since each start costs seconds:

1. steady state: 40 TCP probes at a 2 s interval divided between the two; over a window each
   probe is checked about once per interval in total, not once per process;
2. heartbeat pings sent to both processes (each with its own spool) are stored once each;
3. the target goes down and one member is killed with SIGKILL at once: the other checks all 40
   probes within 15 s of the kill (measured from the kill, by the result rows' times), and
   each probe's outage pages exactly once (one webhook page per component) across the takeover;
   the killed member's silence is itself one alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.conftest import PG_ADMIN, free_port
from tests.helpers import TcpTarget, until
from tests.test_nothing_lost_proxy import pg_database
from tests.test_page_durable import Receiver

BIN = Path(sys.executable).parent / "nachtwacht"
PROBES = 40
INTERVAL = 2.0
TOKEN = "members-heartbeat-token"

pytestmark = [pytest.mark.postgres, pytest.mark.serial]


def site(url: str, hook_port: int, target_port: int, spool: Path) -> str:
    probes = "\n".join(
        f"  - {{name: p{i}, kind: tcp, host: 127.0.0.1, port: {target_port}, "
        f"interval: {INTERVAL:g}s, retries: 0, component: c{i}, severity: 1}}"
        for i in range(PROBES)
    )
    return f"""
site: members
store: {{url: "{url}"}}
spool: {{dir: {spool}}}
engine: {{startup_spread: 1s, flush_interval: 0.5s}}
people:
  contacts:
    - {{id: olga, name: Olga Oncall, roles: [oncall_engineer], email: olga@example.org}}
notify:
  page_rate_limit_per_minute: 1000
  channels:
    hook: {{kind: webhook, url: "http://127.0.0.1:{hook_port}/hook"}}
probes:
  - {{name: beat, kind: heartbeat, token: {TOKEN}, period: 1h}}
{probes}
"""


@pytest.fixture
def database() -> Iterator[str]:
    with pg_database() as name:
        yield name


class Member:
    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--config", str(config), "--port", str(port)],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=config.parent,
        )
        self.url = f"http://127.0.0.1:{port}"

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


async def test_two_serve_processes_divide_the_probes_and_take_over_after_kill_9(
    database: str, tmp_path: Path
) -> None:
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{database}"
    db = create_engine(url)
    Store(url).migrate()  # before they start: the test reads the store at once
    target = TcpTarget(free_port())  # accepts: a backlog nobody accepts from fills up
    await target.start()
    members: list[Member] = []
    async with Receiver() as hook:
        try:
            for n in (0, 1):
                home = tmp_path / f"m{n}"
                home.mkdir()
                config = home / "nachtwacht.yaml"
                config.write_text(site(url, hook.port, target.port, home / "spool"))
                members.append(Member(config, free_port(), home / "serve.log"))

            def division() -> list[int]:
                with db.connect() as conn:
                    rows = conn.execute(
                        select(t.members.c.probes_owned).where(t.members.c.dead_at.is_(None))
                    ).all()
                return [r[0] for r in rows]

            def divided() -> bool:
                owned = division()
                # and the heartbeat probe: its pings' absence is checked too
                return len(owned) == 2 and sum(owned) == PROBES + 1 and min(owned) > 0

            await until(divided, "both members checking a share", timeout=60, interval=0.2)
            for m in members:
                await _answers(m)

            # 1. steady state: count each probe's checks over a window
            await asyncio.sleep(2 * INTERVAL)  # the joiner's settling is over
            start = time.time()
            window = 8 * INTERVAL
            pings = await _ping_both(members, 60)
            await asyncio.sleep(max(0.0, start + window - time.time()) + 1)
            checks = _checks(db, start, start + window)
            per_probe = window / INTERVAL  # 8
            assert len(checks) == PROBES, checks
            assert all(per_probe - 2 <= n <= per_probe + 1 for n in checks.values()), checks

            # 2. pings accepted by either process, stored once each
            assert pings == 60
            with db.connect() as conn:
                stored = conn.execute(
                    select(t.heartbeat_pings.c.body).where(t.heartbeat_pings.c.token == TOKEN)
                ).scalars()
                assert Counter(stored) == Counter(str(i) for i in range(60))

            # 3. the target goes down and a member is killed with it
            victim, survivor = members
            await target.stop()
            killed_at = time.time()
            victim.kill()

            def all_checked_since_kill() -> bool:
                return len(_checks(db, killed_at + 0.5, time.time() + 60)) == PROBES

            await until(all_checked_since_kill, "every probe checked after the kill", 30, 0.2)
            firsts = _first_checks(db, killed_at + 0.5)
            takeover = max(firsts.values()) - killed_at
            assert takeover <= 15.0, f"takeover took {takeover:.1f} s"

            def paged_all() -> bool:
                return len({p["payload"].get("component") for p in _pages(hook)}) >= PROBES

            await until(paged_all, "a page for each probe's outage", 40, 0.2)
            await asyncio.sleep(2 * INTERVAL + 1)  # room for a second page, if one came
            # a message resent after a kill carries the same key (at-least-once, deduplicated
            # by the receiver): a second page is a second key
            keys = {(p["key"], p["payload"].get("component")) for p in _pages(hook)}
            components = Counter(component for _, component in keys)
            assert all(components[f"c{i}"] == 1 for i in range(PROBES)), components
            with db.connect() as conn:
                silent = conn.execute(
                    select(t.alerts.c.fingerprint).where(t.alerts.c.fingerprint.like("member:%"))
                ).all()
            assert len(silent) == 1
            async with httpx.AsyncClient() as client:
                health = await client.get(f"{survivor.url}/healthz")
            assert health.status_code in (200, 503)  # it answers; pages may be degraded
        finally:
            for m in members:
                m.stop()
            await target.stop()
            db.dispose()
            for m in members:
                sys.stderr.write(m.log.read_text(errors="replace")[-3000:])


async def _answers(m: Member) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            try:
                await client.get(f"{m.url}/healthz", timeout=2)
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
    raise AssertionError(f"{m.url} does not answer")


async def _ping_both(members: list[Member], n: int) -> int:
    ok = 0
    async with httpx.AsyncClient() as client:
        for i in range(n):
            m = members[i % len(members)]
            r = await client.post(f"{m.url}/ping/{TOKEN}", content=str(i))
            ok += r.status_code == 200
    return ok


def _checks(db: object, since: float, until_ts: float) -> dict[str, int]:
    r = t.results.c
    with db.connect() as conn:  # type: ignore[attr-defined]
        rows = conn.execute(
            select(t.probes.c.name, func.count())
            .select_from(t.results.join(t.probes, t.probes.c.id == r.probe_id))
            .where(r.ts >= since, r.ts < until_ts, t.probes.c.kind == "tcp")
            .group_by(t.probes.c.name)
        ).all()
    return {name: n for name, n in rows}


def _first_checks(db: object, since: float) -> dict[str, float]:
    r = t.results.c
    with db.connect() as conn:  # type: ignore[attr-defined]
        rows = conn.execute(
            select(t.probes.c.name, func.min(r.ts))
            .select_from(t.results.join(t.probes, t.probes.c.id == r.probe_id))
            .where(r.ts >= since, t.probes.c.kind == "tcp")
            .group_by(t.probes.c.name)
        ).all()
    return {name: ts for name, ts in rows}


def _pages(hook: Receiver) -> list[dict]:
    return [p for p in hook.pages() if p.get("payload", {}).get("component") != "nachtwacht"]
