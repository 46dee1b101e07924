"""A real `nachtwacht agent` against a real `nachtwacht serve`, the server stopped for 30 s.

The agent checks a loopback TCP port every second. The server is frozen (SIGSTOP) for 30 s and
then let go; then the agent is killed -9 and started again. Every result the agent made,
including those of the 30 s, must be in the store, each once, in the agent's order. Serial:
two real processes and a 30 s pause.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import free_port
from tests.helpers import until_sync

BIN = Path(sys.executable).parent / "nachtwacht"
FROZEN = 30.0

pytestmark = pytest.mark.serial


def config(tmp: Path, port: int, target: int) -> Path:
    path = tmp / "nachtwacht.yaml"
    path.write_text(
        f"""
site: agents
store: {{url: "sqlite:///{tmp / "nw.db"}"}}
spool: {{dir: {tmp / "spool"}}}
server: {{port: {port}, location: local}}
engine: {{startup_spread: 1s}}
people:
  contacts:
    - {{id: olga, name: Olga, roles: [oncall_engineer], email: olga@example.org}}
probes:
  - {{name: shop, kind: tcp, host: 127.0.0.1, port: {target}, interval: 1s, timeout: 2s,
     retries: 0, locations: [local, office]}}
"""
    )
    return path


def agent_status(directory: Path) -> dict:
    try:
        return json.loads((directory / "agent.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def stored(db: Path) -> list[tuple[int, float]]:
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT seq, ts FROM results WHERE location = 'office' ORDER BY id")
            ).all()
    finally:
        engine.dispose()
    return [(int(seq), float(ts)) for seq, ts in rows]


def test_agent_results_survive_a_frozen_server_in_order(tmp_path: Path) -> None:
    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen(1024)
    port = free_port()
    cfg = config(tmp_path, port, target.getsockname()[1])
    made = subprocess.run(
        [str(BIN), "agent-token", "create", "office-agent", "--location", "office",
         "--config", str(cfg), "--json"],
        capture_output=True, text=True, check=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    token = json.loads(made.stdout)["token"]
    url = f"http://127.0.0.1:{port}"
    server_log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [str(BIN), "serve", "--config", str(cfg)],
        stdout=server_log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    agent_dir = tmp_path / "agent"
    agent_log = (tmp_path / "agent.log").open("wb")
    agent: subprocess.Popen[bytes] | None = None
    try:

        def answering() -> bool:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                return httpx.get(f"{url}/healthz", timeout=5).status_code in (200, 503)
            except httpx.HTTPError:
                return False

        until_sync(answering, "nachtwacht serve to answer", 120, interval=0.1)
        # the agent's token is good for its endpoints and nothing else
        other = httpx.get(f"{url}/api/v1/probes", headers={"Authorization": f"Bearer {token}"})
        assert other.status_code == 403, other.text
        agent = subprocess.Popen(
            [str(BIN), "agent", "--server", url, "--token", token, "--spool", str(agent_dir),
             "--refresh", "2"],
            stdout=agent_log, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
        until_sync(lambda: len(stored(tmp_path / "nw.db")) >= 3, "first agent results", 60)

        os.kill(server.pid, signal.SIGSTOP)
        frozen_at = time.time()
        try:
            # while the server is frozen the agent goes on checking, into its spool
            until_sync(
                lambda: agent_status(agent_dir).get("server_ok") is False,
                "the agent to notice the server is gone", 30,
            )  # fmt: skip
            until_sync(lambda: time.time() - frozen_at >= FROZEN, "30 s", FROZEN + 5, 0.5)
            spooled = agent_status(agent_dir)
            assert spooled["appended_seq"] - spooled["sent_seq"] >= 20, spooled
        finally:
            os.kill(server.pid, signal.SIGCONT)
        thawed_at = time.time()

        def caught_up() -> bool:
            status = agent_status(agent_dir)
            return bool(status) and status["sent_seq"] >= spooled["appended_seq"]

        until_sync(caught_up, "the agent to deliver its spool", 60, interval=0.2)
        # the agent killed -9 and started again on its spool: it numbers on, sends what is left
        agent.kill()
        agent.wait(10)
        before = agent_status(agent_dir)["appended_seq"]
        agent = subprocess.Popen(
            [str(BIN), "agent", "--server", url, "--token", token, "--spool", str(agent_dir),
             "--refresh", "2"],
            stdout=agent_log, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
        until_sync(
            lambda: agent_status(agent_dir).get("sent_seq", 0) >= before + 3,
            "results after the restart", 60,
        )  # fmt: skip
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0, (tmp_path / "agent.log").read_text()
        final = agent_status(agent_dir)
        assert final["sent_seq"] == final["appended_seq"], final

        rows = stored(tmp_path / "nw.db")
        seqs = [seq for seq, _ in rows]
        # every result, each once, in the agent's order
        assert seqs == list(range(seqs[0], final["appended_seq"] + 1)), seqs
        assert seqs[0] == 1
        times = [ts for _, ts in rows]
        assert times == sorted(times)
        during = [ts for ts in times if frozen_at + 2 <= ts <= thawed_at - 2]
        assert len(during) >= 20, (len(during), frozen_at, thawed_at)
        auth = {"Authorization": f"Bearer {token}"}
        listed = httpx.get(f"{url}/api/v1/agent/probes", headers=auth)
        assert listed.status_code == 200 and listed.json()["last_seq"] == final["appended_seq"]
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait(10)
        with_stop(server)
        target.close()
        server_log.close()
        agent_log.close()


def with_stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGCONT)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
