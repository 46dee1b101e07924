"""A real `nachtwacht serve` stays small under 20 parallel anonymous 250 MB bodies.

Before the body door (web/bodies.py) six such bodies took the server from 156 MB to 3.4 GB:
FastAPI read each one whole before `access` or the ingest key refused it. Here every request
claims (Content-Length) or streams (chunked) 250 MB, and the client sends until the server
answers or drops the connection, so no more than a few MB cross loopback per request.

The numbers go to the test's output (`pytest -s`) and docs/security.md ("Limits").
"""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

BIN = Path(sys.executable).parent / "nachtwacht"
HUGE = 250 * 1024 * 1024
BLOCK = b"0" * 65536
# a server that reads on would take this much before it answered: the test fails instead
SEND_AT_MOST = 32 * 1024 * 1024
GROWTH_AT_MOST = 50 * 1024 * 1024

# (path, chunked, the answer): anonymous, so routes that need a login or a key say 401 at once
CASES = [
    ("/login", False, 413),
    ("/login", True, 413),
    ("/ack/xyz", False, 413),
    ("/ack/xyz", True, 413),
    ("/api/v1/alerts", False, 401),
    ("/api/v1/alerts", True, 401),
    ("/api/v1/errors/events", False, 401),
    ("/api/v1/errors/events", True, 401),
    ("/api/v1/incidents", False, 401),
    ("/api/v1/incidents", True, 401),
]


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    config = tmp_path / "nachtwacht.yaml"
    config.write_text("site: bodies\nprobes: []\n", encoding="utf-8")
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN), "serve", "--config", str(config), "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        end = time.monotonic() + 30
        while True:  # bounded wait for the server to answer at all; not a timing assertion
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > end or proc.poll() is not None:
                    raise AssertionError("nachtwacht serve did not start") from None
                time.sleep(0.1)
        yield proc, port
    finally:
        proc.terminate()
        proc.wait(15)


def send_huge(port: int, path: str, chunked: bool) -> tuple[int, int]:
    """POST a 250 MB body until the server answers; (status, body bytes sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {HUGE}"
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"{framing}\r\n\r\n".encode()
    )
    piece = b"%x\r\n%s\r\n" % (len(BLOCK), BLOCK) if chunked else BLOCK
    pending = b""
    sent = 0
    sock.setblocking(False)
    try:
        while sent < SEND_AT_MOST:
            readable, writable, _ = select.select([sock], [sock], [], 10)
            if readable or not writable:
                break  # the answer (or the server closing); or 10 s of nothing: read below
            pending = pending or piece
            try:
                n = sock.send(pending)
            except (BrokenPipeError, ConnectionResetError):
                break  # closed while we sent: its answer may still be waiting to be read
            pending = pending[n:]
            sent += n
        assert sent < SEND_AT_MOST, f"{path}: the server read {sent} bytes without answering"
        sock.setblocking(True)
        sock.settimeout(10)
        answer = b""
        try:
            while b"\r\n" not in answer:
                data = sock.recv(4096)
                if not data:
                    break
                answer += data
        except ConnectionResetError:
            pass
        assert answer.startswith(b"HTTP/1.1 "), f"{path}: no answer before the close: {answer!r}"
        return int(answer.split()[1]), sent
    finally:
        sock.close()


def test_twenty_parallel_250_mb_anonymous_bodies_leave_memory_bounded(
    server: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = server
    # warm: the first refusal imports and allocates what every later one reuses
    for path, chunked, _ in CASES[:2]:
        send_huge(port, path, chunked)
    before = rss(proc.pid)
    requests = CASES * 2
    with ThreadPoolExecutor(len(requests)) as pool:
        results = list(pool.map(lambda c: send_huge(port, c[0], c[1]), requests))
    after = rss(proc.pid)
    statuses = [status for status, _ in results]
    assert statuses == [expected for _, _, expected in requests]
    sent = sum(s for _, s in results)
    print(
        f"\nRSS of nachtwacht serve: {before / 2**20:.1f} MB before, {after / 2**20:.1f} MB after "
        f"{len(requests)} parallel 250 MB anonymous bodies ({sent / 2**20:.1f} MB actually sent "
        f"before the answers; growth {(after - before) / 2**20:+.1f} MB)"
    )
    assert after - before < GROWTH_AT_MOST
    # and it still serves
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code in (200, 503)
