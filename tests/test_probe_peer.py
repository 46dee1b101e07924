"""The `peer` probe: one Nachtwacht watching another without a shared store (issue 16).

The verdicts on /healthz answers, a real aiohttp server standing in for a peer in trouble,
and two real `nachtwacht serve` processes on separate SQLite stores: A watches B, B is killed
with SIGKILL, A confirms it critical and pages through its own webhook channel.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select

from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import parse_config
from nachtwacht.config.redact import settings_secrets
from nachtwacht.probes import registry
from nachtwacht.probes.context import ProbeContext
from nachtwacht.probes.kinds.peer import Config, judge
from nachtwacht.probes.results import Status
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.conftest import closed_port, free_port
from tests.helpers import until
from tests.test_page_durable import Receiver

BIN = Path(sys.executable).parent / "nachtwacht"
NOW = 1_900_000_000.0
WHERE = "http://peer.example:8080"


def details(**over: Any) -> bytes:
    body: dict[str, Any] = {
        "status": "ok",
        "at": NOW,
        "modules": [
            {"module": "writer", "healthy": True, "last_ok": NOW - 1},
            {"module": "scheduler", "healthy": True, "last_ok": NOW - 4},
        ],
        "store": {"available": True, "error": None},
        "summary": "store up",
    }
    body.update(over)
    return json.dumps(body).encode()


# -- the verdicts ----------------------------------------------------------------------------


def test_a_healthy_peer_is_ok_with_its_heartbeat_age() -> None:
    result = judge(WHERE, 200, details(), 60, NOW + 3600)  # our clock an hour off: no matter
    assert result.status is Status.OK and result.value == 4
    assert result.message == f"peer {WHERE} ok: engine ticked 4s ago, store up"


def test_a_stalled_engine_is_critical_by_the_peers_own_clock() -> None:
    stalled = [{"module": "scheduler", "healthy": False, "last_ok": NOW - 95}]
    result = judge(WHERE, 503, details(status="degraded", modules=stalled), 60, NOW)
    assert result.status is Status.CRITICAL
    assert "its engine stalled: the last tick was 95s ago" in result.message


def test_a_store_that_is_down_is_critical_and_says_so() -> None:
    body = details(status="degraded", store={"available": False, "error": "disk I/O error"})
    result = judge(WHERE, 503, body, 60, NOW)
    assert result.status is Status.CRITICAL
    assert result.message == f"peer {WHERE}: its store is down (disk I/O error)"


def test_degraded_for_another_reason_is_a_warning_with_the_peers_summary() -> None:
    body = details(status="degraded", summary="nobody can be paged")
    result = judge(WHERE, 503, body, 60, NOW)
    assert result.status is Status.WARNING
    assert result.message == f"peer {WHERE} degraded: nobody can be paged"


@pytest.mark.parametrize(
    ("verdict", "status"),
    [("ok", Status.OK), ("degraded", Status.WARNING), ("down", Status.CRITICAL)],
)
def test_without_a_token_the_peers_verdict_decides(verdict: str, status: Status) -> None:
    result = judge(
        WHERE, 200 if verdict == "ok" else 503, json.dumps({"status": verdict}).encode(), 60, NOW
    )
    assert result.status is status


def test_a_refused_token_and_a_stranger_are_critical() -> None:
    assert "refused the probe's token (401)" in judge(WHERE, 401, b"{}", 60, NOW).message
    stranger = judge(WHERE, 200, b"<html>hello</html>", 60, NOW)
    assert stranger.status is Status.CRITICAL
    assert stranger.message == f"peer {WHERE} answered HTTP 200 without a Nachtwacht health verdict"


def test_the_defaults_confirm_a_dead_peer_within_a_minute() -> None:
    cfg = Config(name="peer-b", kind="peer", url="http://b.example:8080")  # type: ignore[arg-type]
    # the failure starts just after a good check; each attempt may hang for the timeout
    worst = cfg.interval + cfg.timeout + cfg.retries * (cfg.effective_retry_interval + cfg.timeout)
    assert worst <= 60 and cfg.severity == 1


def test_the_token_is_a_secret_of_the_config() -> None:
    settings = parse_config(
        "probes:\n  - {name: peer-b, kind: peer, url: 'http://b:8080', token: nwt_s3cret}\n",
        "nachtwacht.yaml",
    )
    # what /healthz, the API and the logs redact (config/redact.py)
    assert "nwt_s3cret" in settings_secrets(settings)


# -- the probe against a server that answers what a peer in trouble answers ------------------


@contextlib.asynccontextmanager
async def fake_peer(answer: tuple[int, bytes]) -> AsyncIterator[str]:
    seen: list[str | None] = []

    async def healthz(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(status=answer[0], body=answer[1], content_type="application/json")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
    assert seen and all(a == "Bearer nwt_viewer" for a in seen)


async def check(url: str, **keys: Any) -> Any:
    cfg = Config(name="peer-b", kind="peer", url=url, token="nwt_viewer", **keys)  # type: ignore[arg-type]
    ctx = ProbeContext(clock=FakeClock(NOW))
    probe = registry.build(cfg, ctx)
    try:
        return await probe.run()
    finally:
        await ctx.close()


async def test_the_probe_reads_a_real_answer_and_sends_its_token() -> None:
    stalled = [{"module": "scheduler", "healthy": False, "last_ok": NOW - 300}]
    async with fake_peer((503, details(status="degraded", modules=stalled))) as url:
        result = await check(url)
    assert result.status is Status.CRITICAL and "its engine stalled" in result.message
    assert result.latency_ms is not None


async def test_a_peer_that_refuses_connections_does_not_answer() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = await check(url)
    assert result.status is Status.CRITICAL
    assert result.message.startswith(f"peer {url} does not answer")


# -- two real processes ----------------------------------------------------------------------


def write_config(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")
    return path


@contextlib.contextmanager
def serve(config: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    log = config.parent / "serve.log"
    proc = subprocess.Popen(
        [str(BIN), "serve", "--config", str(config), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        cwd=config.parent,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


def peer_state(store: Store) -> tuple[str, str] | None:
    with store.connect() as conn:
        row = conn.execute(
            select(t.probe_state.c.state, t.probe_state.c.last_message)
            .join(t.probes, t.probes.c.id == t.probe_state.c.probe_id)
            .where(t.probes.c.name == "peer-b")
        ).first()
    return None if row is None else (str(row[0]), str(row[1]))


@pytest.mark.serial  # two real serve processes, one of them killed with SIGKILL
async def test_a_watches_b_and_pages_when_b_is_killed(tmp_path: Path) -> None:
    port_b = free_port()
    async with Receiver() as hooks:
        # B can page someone too: one that cannot is degraded, and A would only warn
        paging = f"""people:
  contacts:
    - {{id: olga, name: Olga Oncall, roles: [oncall_engineer], email: olga@example.org}}
notify:
  channels:
    hook: {{kind: webhook, url: "http://127.0.0.1:{hooks.port}/hook"}}
"""
        config_b = write_config(
            tmp_path / "b" / "nachtwacht.yaml",
            f"""site: b
store: {{url: "sqlite:///{tmp_path / "b" / "nw.db"}"}}
spool: {{dir: {tmp_path / "b" / "spool"}}}
engine: {{startup_spread: 0.1s}}
{paging}probes: []
""",
        )
        made = subprocess.run(
            [str(BIN), "token", "create", "peer-a", "--role", "viewer", "--config", str(config_b)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert made.returncode == 0, made.stderr
        token = next(w for w in made.stdout.split() if w.startswith("nwt_"))
        config_a = write_config(
            tmp_path / "a" / "nachtwacht.yaml",
            f"""site: a
store: {{url: "sqlite:///{tmp_path / "a" / "nw.db"}"}}
spool: {{dir: {tmp_path / "a" / "spool"}}}
engine: {{startup_spread: 0.1s}}
{paging}probes:
  - name: peer-b
    kind: peer
    url: http://127.0.0.1:{port_b}
    token: {token}
    component: monitoring
    interval: 1s
    timeout: 2s
    retries: 1
    retry_interval: 1s
""",
        )
        store_a = Store(f"sqlite:///{tmp_path / 'a' / 'nw.db'}")
        store_a.migrate()
        with serve(config_b, port_b) as b, serve(config_a, free_port()):

            def logs() -> str:
                tails = {n: (tmp_path / n / "serve.log").read_text(errors="replace") for n in "ab"}
                return "\n".join(f"--- {n} ---\n{tail[-3000:]}" for n, tail in tails.items())

            try:
                await until(lambda: (peer_state(store_a) or ("",))[0] == "ok", "A sees B ok", 120)
                state = peer_state(store_a)
                assert state is not None and "engine ticked" in state[1], state
                b.send_signal(signal.SIGKILL)
                b.wait(30)
                await until(lambda: len(hooks.pages()) >= 1, "A pages about B", 60)
            except AssertionError as exc:
                raise AssertionError(f"{exc}: A has {peer_state(store_a)}\n{logs()}") from None
        state = peer_state(store_a)
        assert state is not None and state[0] == "critical"
        assert f"peer http://127.0.0.1:{port_b} does not answer" in state[1]
        page = hooks.pages()[0]
        assert page["payload"]["severity"] == 1 and page["payload"]["component"] == "monitoring"
        assert "peer-b" in page["payload"]["title"]
        with store_a.connect() as conn:
            alerts = conn.execute(select(t.alerts.c.status)).all()
            incidents = conn.execute(select(t.incidents.c.id)).all()
        assert len(alerts) == 1 and len(incidents) == 1
        store_a.dispose()
