"""The agent process's parts, in-process, against a small stand-in for the server's two agent
endpoints (aiohttp): numbering, the spool while the server refuses, a restart on the same
spool, a batch resent after a crash before its cursor was saved, a changed probe list.

Checks are run with `Scheduler.run_now` and sends with `send_once`: no waiting on the clock.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from nachtwacht.agents.runner import Agent, AgentOptions, Unsent
from tests.conftest import closed_port, free_port


class FakeServer:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        self.probes: list[dict[str, Any]] = []
        self.stored: list[dict[str, Any]] = []
        self.last_seq = 0
        self.down = False
        self.duplicates = 0

    def probe(self, pid: int, name: str) -> None:
        config = {"name": name, "kind": "tcp", "host": "127.0.0.1", "port": closed_port(),
                  "interval": 60, "timeout": 2, "retries": 0, "locations": ["office"]}  # fmt: skip
        self.probes.append({"id": pid, "config": config})

    async def get_probes(self, request: web.Request) -> web.Response:
        etag = '"' + hashlib.sha256(json.dumps(self.probes).encode()).hexdigest()[:16] + '"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        body = {"location": "office", "last_seq": self.last_seq, "probes": self.probes}
        return web.json_response(body, headers={"ETag": etag})

    async def post_results(self, request: web.Request) -> web.Response:
        if self.down:
            return web.json_response({"detail": "store down"}, status=503)
        results = (await request.json())["results"]
        fresh = [r for r in results if r["seq"] > self.last_seq]
        self.duplicates += len(results) - len(fresh)
        self.stored.extend(fresh)
        if fresh:
            self.last_seq = fresh[-1]["seq"]
        return web.json_response({"stored": len(fresh), "last_seq": self.last_seq})


@pytest.fixture
async def server():  # noqa: ANN201
    fake = FakeServer(free_port())
    app = web.Application()
    app.router.add_get("/api/v1/agent/probes", fake.get_probes)
    app.router.add_post("/api/v1/agent/results", fake.post_results)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", fake.port).start()
    yield fake
    await runner.cleanup()


def agent_for(fake: FakeServer, directory: Path) -> Agent:
    return Agent(AgentOptions(fake.url, "nwa_test", directory))


async def fetch(agent: Agent, http: aiohttp.ClientSession) -> bool:
    """Fetch the probe list, and stop the scheduler's own loop: checks run only when the test
    says (`run_now`), so the numbering is the test's."""
    answered = await agent.fetch_probes(http)
    if agent._scheduler_stop is not None and agent._scheduler_task is not None:
        agent._scheduler_stop.set()
        if agent.scheduler is not None:
            agent.scheduler.wake()
        await agent._scheduler_task
    return answered


async def test_results_are_numbered_spooled_and_sent_in_order(
    server: FakeServer, tmp_path: Path
) -> None:
    server.probe(7, "shop")
    agent = agent_for(server, tmp_path)
    async with aiohttp.ClientSession() as http:
        assert await fetch(agent, http)
        assert agent.scheduler is not None and list(agent.scheduler.by_name) == ["shop"]
        await agent.scheduler.run_now()
        await agent.scheduler.run_now()
        assert agent.sink.appended == 2
        server.down = True
        with pytest.raises(Unsent, match="503"):
            await agent.send_once(http)
        await agent.scheduler.run_now()  # while the server refuses: into the spool
        assert agent.cursor.seq == 0 and agent.status()["unsent_bytes"] > 0
        server.down = False
        assert await agent.send_once(http) == 3
        assert await agent.send_once(http) == 0
    assert [r["seq"] for r in server.stored] == [1, 2, 3]
    assert all(r["probe_id"] == 7 and r["status"] == 2 for r in server.stored)
    assert [r["ts"] for r in server.stored] == sorted(r["ts"] for r in server.stored)
    await agent._stop_scheduler()
    agent.spool.close()


async def test_a_restart_numbers_on_and_a_resent_batch_is_not_stored_twice(
    server: FakeServer, tmp_path: Path
) -> None:
    server.probe(7, "shop")
    agent = agent_for(server, tmp_path)
    async with aiohttp.ClientSession() as http:
        await fetch(agent, http)
        assert agent.scheduler is not None
        await agent.scheduler.run_now()
        await agent.send_once(http)
        saved = (tmp_path / "sent.json").read_bytes()
        await agent.scheduler.run_now()
        await agent.scheduler.run_now()
        await agent.send_once(http)  # the server has 1-3 ...
        await agent._stop_scheduler()
        agent.spool.close()
        # ... but the agent died before its cursor said so: it starts from the older cursor
        (tmp_path / "sent.json").write_bytes(saved)
        again = agent_for(server, tmp_path)
        assert again.sink.next_seq == 4
        assert await again.send_once(http) == 2  # 2 and 3 again, skipped by the server
        assert server.duplicates == 2
        await fetch(again, http)
        assert again.scheduler is not None
        await again.scheduler.run_now()
        await again.send_once(http)
        await again._stop_scheduler()
        again.spool.close()
    assert [r["seq"] for r in server.stored] == [1, 2, 3, 4]


async def test_a_changed_probe_list_replaces_the_probes_and_an_unchanged_one_is_304(
    server: FakeServer, tmp_path: Path
) -> None:
    server.probe(7, "shop")
    agent = agent_for(server, tmp_path)
    async with aiohttp.ClientSession() as http:
        await fetch(agent, http)
        first = agent.scheduler
        assert await fetch(agent, http)  # 304: the same scheduler goes on
        assert agent.scheduler is first
        assert first is not None
        await first.run_now()
        server.probe(8, "db")
        await fetch(agent, http)
        assert agent.scheduler is not first and agent.scheduler is not None
        assert sorted(agent.scheduler.by_name) == ["db", "shop"]
        # retry state carries over to the new scheduler
        assert agent.scheduler.by_name["shop"].state.last_check is not None
        assert json.loads((tmp_path / "probes.json").read_text())[1]["id"] == 8
        await agent._stop_scheduler()
    agent.spool.close()
