"""`nachtwacht serve` as a real process: it serves, checks, survives kill -9, and resumes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import closed_port, free_port
from tests.helpers import until_sync

pytestmark = pytest.mark.serial  # kill -9 / restarts of real processes: see conftest

BIN = Path(sys.executable).parent / "nachtwacht"
HEADERS: dict[str, str] = {}


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        yield sock.getsockname()[1]


def _start(config: Path, port: int, out: Path | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN), "serve", "--config", str(config), "--port", str(port)],
        stdout=out.open("wb") if out else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=config.parent,
    )


def _wait_for(url: str, predicate, timeout: float = 90.0) -> dict:  # noqa: ANN001
    """Poll until the server reports what we wait for (bounded; not a timing assertion).

    The bound covers a cold start of serve on a loaded 2-core machine (over 20 s seen).
    """
    last: dict[str, object] = {}

    def answered() -> bool:
        try:
            last["answer"] = httpx.get(url, timeout=5, headers=HEADERS).json()
        except httpx.HTTPError as exc:
            last["answer"] = exc
            return False
        return bool(predicate(last["answer"]))

    try:
        until_sync(answered, url, timeout, interval=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last answer: {last.get('answer')}") from None
    return last["answer"]  # type: ignore[return-value]


def test_serve_checks_probes_and_resumes_after_kill_9(tmp_path: Path, listening_port: int) -> None:
    down_port = closed_port()
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(
        f"""site: serve-test
engine:
  startup_spread: 0.2s
  flush_interval: 0.2s
probes:
  - name: up
    kind: tcp
    host: 127.0.0.1
    port: {listening_port}
    interval: 1s
  - name: down
    kind: tcp
    host: 127.0.0.1
    port: {down_port}
    interval: 1s
    retries: 0
""",
        encoding="utf-8",
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    made = subprocess.run(
        [str(BIN), "token", "create", "tests", "--role", "viewer", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    token = next(w for w in made.stdout.split() if w.startswith("nwt_"))
    auth = {"Authorization": f"Bearer {token}"}
    HEADERS.update(auth)
    first_out = tmp_path / "first.out"
    proc = _start(config, port, first_out)
    try:
        status = _wait_for(
            f"{base}/api/v1/status",
            lambda s: (
                {p["name"]: p["state"] for c in s["components"] for p in c["probes"]}
                == {"up": "ok", "down": "critical"}
            ),
        )
        assert status["overall"] == "critical"
        metrics = httpx.get(f"{base}/metrics", headers=auth).text
        assert 'nachtwacht_probe_up{component="default",kind="tcp",probe="up"} 1.0' in metrics
        history = httpx.get(f"{base}/api/v1/probes/down/history", headers=auth).json()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert [h["to_state"] for h in history] == ["critical"]

    # the store is readable while nothing serves it
    cli = subprocess.run(
        [str(BIN), "status", "--json", "--config", str(config)], capture_output=True, timeout=120
    )
    assert cli.returncode == 2
    assert json.loads(cli.stdout)["overall"] == "critical"

    second_out = tmp_path / "second.out"
    proc = _start(config, port, second_out)
    try:
        _wait_for(
            f"{base}/api/v1/probes/down",
            lambda p: p["last_check"] is not None and p["last_check"] > history[0]["time"],
        )
        # every engine module healthy again; this config pages nobody, which alone keeps
        # /healthz "degraded" (tests/test_nobody_paged.py)
        health = _wait_for(
            f"{base}/healthz",
            lambda h: all(m["healthy"] for m in h["modules"]) and h["store"]["available"],
        )
        assert health["status"] == "degraded" and not health["paging"]["ok"]
        after = httpx.get(f"{base}/api/v1/probes/down/history", headers=auth).json()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        log = proc.stderr.read().decode() if proc.stderr else ""
    # uvicorn re-raises the signal after a graceful shutdown
    assert code in (0, -signal.SIGTERM) and "Application shutdown complete" in log, log
    # the first start created an admin and showed its one-time password; the second did not
    assert "one-time password" in first_out.read_text()
    assert "one-time password" not in second_out.read_text()
    # still critical after the restart: the outage is not announced a second time
    assert [h["to_state"] for h in after] == ["critical"]
    assert os.path.exists(tmp_path / "data" / "nachtwacht.db")


def test_a_second_serve_on_the_same_data_dir_is_refused_in_one_line(tmp_path: Path) -> None:
    from nachtwacht.config.loader import load_config
    from nachtwacht.spool.log import SpoolLog

    config = tmp_path / "nachtwacht.yaml"
    config.write_text(f'store: {{url: "sqlite:///{tmp_path / "nw.db"}"}}\nprobes: []\n')
    running = SpoolLog(load_config(config).spool_dir)  # what the first serve holds
    try:
        second = subprocess.run(
            [str(BIN), "serve", "--config", str(config), "--port", str(free_port())],
            capture_output=True,
            cwd=tmp_path,
            timeout=120,
        )
    finally:
        running.close()
    assert second.returncode == 1
    lines = second.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "another nachtwacht serve is running" in lines[0], lines
