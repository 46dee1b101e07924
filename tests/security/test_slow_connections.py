"""Slow clients against a real `nachtwacht serve` with a descriptor limit of 256 (issue 12).

Before, a few hundred connections that sent half their headers or trickled a body held their
descriptors forever: `/healthz` and `/ping` stopped answering and the spool logged "Too many
open files". Real sockets against a real server, so real time: the timeouts are set to 1 s
where the test waits for them, and every bound on how long something may take is generous.
"""

from __future__ import annotations

import contextlib
import resource
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import free_port

BIN = Path(sys.executable).parent / "nachtwacht"
DESCRIPTORS = 256
TOKEN = "slow-test-heartbeat"
PROMPTLY = 5.0  # an answer under load; the point is that it comes, not how fast
SITE = f"""site: slow-test
probes:
  - name: nightly
    kind: heartbeat
    token: {TOKEN}
    period: 1d
"""


@dataclass
class Served:
    base: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes]
    sockets: list[socket.socket] = field(default_factory=list)

    def open(self, first_bytes: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=PROMPTLY)
        sock.sendall(first_bytes)
        self.sockets.append(sock)
        return sock


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTORS, DESCRIPTORS))


@contextmanager
def serve(tmp_path: Path, extra: str = "") -> Iterator[Served]:
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(SITE + extra, encoding="utf-8")
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN), "serve", "--config", str(config), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            preexec_fn=_limit_descriptors,
        )
    served = Served(f"http://127.0.0.1:{port}", port, log, proc)
    try:
        end = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                httpx.get(f"{served.base}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < end, f"serve never answered:\n{log.read_text()}"
                time.sleep(0.1)
        yield served
    finally:
        for sock in served.sockets:
            sock.close()
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _assert_answers_promptly(served: Served) -> None:
    started = time.monotonic()
    health = httpx.get(f"{served.base}/healthz", timeout=PROMPTLY)
    # 503 is /healthz's own "degraded" (this config pages nobody), always JSON with a status
    assert health.json()["status"] in ("ok", "degraded"), health.text
    ping = httpx.get(f"{served.base}/ping/{TOKEN}", timeout=PROMPTLY)
    assert (ping.status_code, ping.text) == (200, "OK")
    assert time.monotonic() - started < 2 * PROMPTLY


PARTIAL_HEADERS = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a"
TRICKLED_BODY = (
    f"POST /ping/{TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nab".encode()
)


def test_healthz_and_heartbeat_pings_answer_while_300_slow_connections_are_held(
    tmp_path: Path,
) -> None:
    # the defaults: the connection bound comes from the descriptor limit alone
    with serve(tmp_path) as served:
        for n in range(300):
            served.open(TRICKLED_BODY if n % 2 else PARTIAL_HEADERS)
        _assert_answers_promptly(served)
        # made room by shedding the slow connections that waited longest, with a 503
        shed = _first_closed(served.sockets, within=PROMPTLY)
        assert any(a.startswith(b"HTTP/1.1 503 ") for a in shed.values()), shed
        _assert_answers_promptly(served)
    log = served.log.read_text()
    assert "Too many open files" not in log, log
    assert "shed to make room" in log


def test_slow_headers_trickled_bodies_and_idle_connections_are_closed_after_their_timeouts(
    tmp_path: Path,
) -> None:
    timeouts = """server:
  header_timeout: 1s
  body_timeout: 1s
  body_min_rate: 100
  keep_alive_timeout: 1s
"""
    with serve(tmp_path, timeouts) as served:
        headers = [served.open(PARTIAL_HEADERS) for _ in range(60)]
        bodies = [served.open(TRICKLED_BODY) for _ in range(60)]
        silent = served.open(b"")
        kept = served.open(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        _assert_answers_promptly(served)
        # a byte every 0.2 s to each: never a pause near the 1 s timeouts, but headers that
        # never end and bodies at 5 bytes/s against a minimum of 100
        answers = _answers(
            headers + bodies + [silent, kept], within=15.0, trickle=(headers + bodies, 0.2)
        )
        for sock in headers + bodies + [silent]:
            assert answers[sock].startswith(b"HTTP/1.1 408 "), answers[sock]
        # the kept-alive connection got its answer, then was closed once idle
        assert answers[kept].startswith(b"HTTP/1.1 ") and answers[kept].count(b"HTTP/1.1") == 1
        _assert_answers_promptly(served)
    assert "Too many open files" not in served.log.read_text()


def _answers(
    socks: list[socket.socket], within: float, trickle: tuple[list[socket.socket], float]
) -> dict[socket.socket, bytes]:
    """What each socket received until the server closed it: all of them, else failure.

    One byte goes to each socket of `trickle[0]` every `trickle[1]` seconds, as a slow
    client would send.
    """
    got = _watch(socks, within, trickle, stop_at_first=False)
    missing = [s for s in socks if s not in got]
    assert not missing, f"{len(missing)} slow connections still open after {within}s"
    return got


def _first_closed(socks: list[socket.socket], within: float) -> dict[socket.socket, bytes]:
    """The first socket(s) the server closed, with what they received; the rest stay held."""
    return _watch(socks, within, ([], 1.0), stop_at_first=True)


def _watch(
    socks: list[socket.socket],
    within: float,
    trickle: tuple[list[socket.socket], float],
    stop_at_first: bool,
) -> dict[socket.socket, bytes]:
    poll = select.poll()  # select() cannot watch descriptors above 1023
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        poll.register(fd, select.POLLIN)
    got = {fd: b"" for fd in by_fd}
    closed: dict[socket.socket, bytes] = {}
    end = time.monotonic() + within
    next_trickle = time.monotonic()
    while len(closed) < len(socks) and time.monotonic() < end:
        if time.monotonic() >= next_trickle:
            for sock in trickle[0]:
                if sock not in closed:
                    # closed on the other side: the read below says so
                    with contextlib.suppress(OSError):
                        sock.send(b"a")
            next_trickle += trickle[1]
        for fd, _event in poll.poll(50):
            try:
                data = by_fd[fd].recv(65536)
            except OSError:
                data = b""
            if data:
                got[fd] += data
            else:
                closed[by_fd[fd]] = got[fd]
                poll.unregister(fd)
        if stop_at_first and closed:
            break
    return closed
