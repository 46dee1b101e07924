"""Error ingestion: Sentry envelopes over HTTP at increasing rates against `nachtwacht serve`.

Starts a real `nachtwacht serve` (a subprocess, SQLite in a temp dir, a generated config with
no probes) after creating a project with `nachtwacht project add`, then offers gzip-compressed
Sentry envelopes (one event each, as the Python SDK sends them: ~2-4 KB of JSON with a
12-frame stack trace, tags, contexts and breadcrumbs, spread over `--issues` distinct issues)
at each rate of `--rates` for `--seconds` seconds, open loop: requests are started on a fixed
schedule by this process with aiohttp, at most `--inflight` at once (a request that would pass
that bound is counted as `not_offered`, not queued, so the client cannot hide a slow server).

Per rate it prints one JSON line:

- `offered_per_s` and `accepted_per_s` (answers 200 per second of the sending window);
- `stored_per_s`: events in `error_events` from this step divided by the time from the first
  request of the step until the last accepted event of the step is stored (grouped into its
  issue, hourly counts updated: the drainer's transaction does all of it at once);
- `p50_ms`, `p99_ms`, `max_ms`: response times of accepted requests;
- `status`: count per status code (429 when the drainer is behind);
- `peak_rss_mb`: the serve process and its children, sampled every 0.1 s;
- `server_cpu_cores`, `client_cpu_cores`: CPU seconds used per wall second;
- `all_stored`: whether every accepted event_id of the step is in the store (checked by id),
  and `issues`: how many issues the store holds (should stay at `--issues`).

A last line sums it up. Progress goes to stderr.

    .venv/bin/python bench/ingest.py
    .venv/bin/python bench/ingest.py --rates 500,1000,2000,3000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil

BIN = Path(sys.executable).parent / "nachtwacht"
PLACEHOLDER = b"E" * 32  # replaced by each request's event_id before compressing
MODULES = ("shop.orders", "shop.payments", "shop.stock", "shop.api", "shop.users", "shop.mail")
LIBS = ("django.core.handlers.exception", "django.core.handlers.base", "django.views.generic.base")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- events ----------------------------------------------------------------------------------


def event_template(issue: int, rng: random.Random) -> dict[str, Any]:
    """A Python SDK-like error event; `issue` decides its stack (and so its group)."""
    module = MODULES[issue % len(MODULES)]
    frames = []
    for depth in range(12):
        library = depth < 5
        mod = LIBS[depth % len(LIBS)] if library else f"{module}.layer{depth}"
        path = mod.replace(".", "/") + ".py"
        frames.append(
            {
                "filename": path,
                "abs_path": ("/srv/venv/lib/python3.11/site-packages/" if library else "/srv/app/")
                + path,
                "module": mod,
                "function": f"handle_{depth}" if library else f"step_{issue}_{depth}",
                "lineno": 20 + depth,
                "in_app": not library,
                "context_line": f"    return step_{issue}_{depth}(request, order)",
                "pre_context": ["    order = load(order_id)"],
                "post_context": [""],
            }
        )
    return {
        "event_id": PLACEHOLDER.decode(),
        "level": "error",
        "platform": "python",
        "logger": "shop",
        "server_name": "web-1",
        "release": "shop@1.4.2",
        "environment": "production",
        "transaction": f"/api/orders/{issue}",
        "exception": {
            "values": [
                {
                    "type": f"OrderError{issue}",
                    "value": f"order {rng.randint(1, 10**6)} failed for customer {uuid.uuid4()}",
                    "module": "shop.errors",
                    "mechanism": {"type": "django", "handled": False},
                    "stacktrace": {"frames": frames},
                }
            ]
        },
        "tags": {"tenant": "acme", "region": "eu-west"},
        "contexts": {
            "runtime": {"name": "CPython", "version": "3.11.7"},
            "os": {"name": "Linux", "version": "6.1"},
        },
        "breadcrumbs": {
            "values": [
                {"category": "query", "message": "SELECT * FROM orders WHERE id = %s"},
                {"category": "http", "data": {"url": "https://pay.example/api", "status": 200}},
            ]
        },
        "sdk": {"name": "sentry.python.django", "version": "2.75.0"},
    }


def envelope_template(event: dict[str, Any], ts: float) -> bytes:
    event = {**event, "timestamp": ts}
    payload = orjson.dumps(event)
    header = orjson.dumps({"event_id": PLACEHOLDER.decode(), "sent_at": "2027-01-15T08:00:00Z"})
    item = orjson.dumps({"type": "event", "length": len(payload)})
    return header + b"\n" + item + b"\n" + payload + b"\n"


def bodies(n: int, issues: int, seed: int) -> tuple[list[bytes], list[str], int]:
    """`n` gzip'd envelopes with unique event ids; returns (bodies, ids, mean raw size)."""
    rng = random.Random(seed)
    templates = [event_template(i, rng) for i in range(issues)]
    now = time.time()
    out, ids, raw = [], [], 0
    for i in range(n):
        event_id = uuid.uuid4().hex
        body = envelope_template(templates[i % issues], now).replace(PLACEHOLDER, event_id.encode())
        raw += len(body)
        out.append(gzip.compress(body, compresslevel=6))
        ids.append(event_id)
    return out, ids, raw // max(1, n)


# -- the server ------------------------------------------------------------------------------


@dataclass
class Serve:
    workdir: Path
    port: int
    config: Path
    proc: subprocess.Popen[bytes] | None = None
    peak_rss: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        out = (self.workdir / "serve.log").open("wb")
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--config", str(self.config), "--port", str(self.port),
             "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir,
        )  # fmt: skip
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        assert self.proc is not None
        try:
            root = psutil.Process(self.proc.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in procs)
            except psutil.Error:
                break
            self.peak_rss = max(self.peak_rss, rss)
            time.sleep(0.1)

    def cpu_seconds(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the serve process and its children."""
        assert self.proc is not None
        root = psutil.Process(self.proc.pid)
        user = system = 0.0
        for p in [root, *root.children(recursive=True)]:
            times = p.cpu_times()
            user += times.user
            system += times.system
        return user, system

    def stop(self) -> None:
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def setup(workdir: Path, port: int, spool_dir: Path | None) -> tuple[Path, str]:
    config = workdir / "nachtwacht.yaml"
    spool = f"spool:\n  dir: {spool_dir}\n" if spool_dir else ""
    config.write_text(
        f"site: ingest-bench\nstore:\n  url: sqlite:///{workdir / 'nachtwacht.db'}\n"
        f"server:\n  host: 127.0.0.1\n  port: {port}\n{spool}probes: []\n",
        encoding="utf-8",
    )
    made = subprocess.run(
        [str(BIN), "project", "add", "bench", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return config, made.stdout.strip().splitlines()[-1]


async def wait_healthy(base: str, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < end:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"{base}/healthz") as r:
                    if r.status in (200, 503):
                        return
            await asyncio.sleep(0.1)
    raise SystemExit("nachtwacht serve did not come up; see serve.log")


# -- one step --------------------------------------------------------------------------------


@dataclass
class Step:
    rate: int
    sent: int = 0
    not_offered: int = 0
    latencies: list[float] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)
    accepted: list[str] = field(default_factory=list)
    errors: int = 0


async def offer(
    url: str, headers: dict[str, str], step: Step, payloads: list[bytes], ids: list[str],
    seconds: float, inflight: int, connections: int,
) -> float:  # fmt: skip
    """Send `rate` requests per second for `seconds`; return the sending window's length."""
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    gate = asyncio.Semaphore(inflight)
    tasks: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession, body: bytes, event_id: str) -> None:
        start = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
                code = r.status
        except (TimeoutError, aiohttp.ClientError, OSError):
            step.errors += 1
            return
        finally:
            gate.release()
        step.status[str(code)] = step.status.get(str(code), 0) + 1
        if code == 200:
            step.latencies.append(time.perf_counter() - start)
            step.accepted.append(event_id)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        total = int(step.rate * seconds)
        interval = 1.0 / step.rate
        began = time.perf_counter()
        for i in range(total):
            due = began + i * interval
            delay = due - time.perf_counter()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            if gate.locked():
                step.not_offered += 1
                continue
            await gate.acquire()
            step.sent += 1
            task = asyncio.create_task(one(session, payloads[i], ids[i]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        window = time.perf_counter() - began
        if tasks:
            await asyncio.gather(*tasks)
    return window


def stored_count(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as c:
        return int(c.execute("SELECT count(*) FROM error_events").fetchone()[0])


def stored_check(db: Path, ids: list[str]) -> tuple[bool, int, int]:
    """(every id stored, issues, sum of issue counts)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as c:
        have = {r[0] for r in c.execute("SELECT event_id FROM error_events")}
        issues, counted = c.execute(
            "SELECT count(*), coalesce(sum(count), 0) FROM error_issues"
        ).fetchone()
    return all(i in have for i in ids), int(issues), int(counted)


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 1)


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    workdir = Path(tempfile.mkdtemp(prefix="nw-ingest-"))
    port = free_port()
    config, dsn = setup(workdir, port, None)
    key, _, rest = dsn.partition("://")[2].partition("@")
    project_id = rest.rsplit("/", 1)[1]
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/api/{project_id}/envelope/"
    headers = {
        "Content-Type": "application/x-sentry-envelope",
        "Content-Encoding": "gzip",
        "X-Sentry-Auth": f"Sentry sentry_key={key}, sentry_version=7, sentry_client=bench/1.0",
    }
    db = workdir / "nachtwacht.db"
    serve = Serve(workdir, port, config)
    serve.start()
    results = []
    try:
        await wait_healthy(base)
        log(f"serve up on {base} (workdir {workdir}); DSN {dsn}")
        before = stored_count(db)
        me = psutil.Process()
        for rate in args.rates:
            n = int(rate * args.seconds)
            payloads, ids, raw = bodies(n, args.issues, seed=rate)
            log(f"rate {rate}/s: {n} envelopes of ~{raw} bytes ({len(payloads[0])} gzip'd)")
            step = Step(rate)
            cpu0, mine0, t0 = serve.cpu_seconds(), sum(me.cpu_times()[:2]), time.perf_counter()
            window = await offer(
                url, headers, step, payloads, ids, args.seconds, args.inflight, args.connections
            )
            target = before + len(step.accepted)
            deadline = time.perf_counter() + args.drain_timeout
            count = stored_count(db)
            while count < target and time.perf_counter() < deadline:
                await asyncio.sleep(0.05)
                count = stored_count(db)
            stored_at = time.perf_counter()
            cpu1, mine1 = serve.cpu_seconds(), sum(me.cpu_times()[:2])
            all_stored, issues, counted = stored_check(db, step.accepted)
            elapsed = stored_at - t0
            result = {
                "rate": rate,
                "offered_per_s": round(step.sent / window, 1),
                "accepted_per_s": round(len(step.accepted) / window, 1),
                "stored_per_s": round((count - before) / elapsed, 1),
                "stored": count - before,
                "accepted": len(step.accepted),
                "not_offered": step.not_offered,
                "errors": step.errors,
                "status": step.status,
                "p50_ms": pct(step.latencies, 0.50),
                "p99_ms": pct(step.latencies, 0.99),
                "max_ms": pct(step.latencies, 1.0),
                "drain_lag_s": round(stored_at - t0 - window, 2),
                "peak_rss_mb": round(serve.peak_rss / 2**20, 1),
                "server_cpu_cores": round((sum(cpu1) - sum(cpu0)) / elapsed, 2),
                "server_cpu_system_cores": round((cpu1[1] - cpu0[1]) / elapsed, 2),
                "server_cpu_ms_per_event": round(
                    (sum(cpu1) - sum(cpu0)) * 1000 / max(1, count - before), 3
                ),
                "client_cpu_cores": round((mine1 - mine0) / elapsed, 2),
                "all_stored": all_stored,
                "issues": issues,
                "issue_counts_match": counted == count,
                "event_bytes": raw,
            }
            print(json.dumps(result), flush=True)
            results.append(result)
            before = count
            await asyncio.sleep(args.pause)
    finally:
        serve.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="500,1000,2000,4000", help="Comma-separated events/s.")
    parser.add_argument("--seconds", type=float, default=10.0, help="Sending time per rate.")
    parser.add_argument("--issues", type=int, default=50, help="Distinct issues in the mix.")
    parser.add_argument("--inflight", type=int, default=512, help="Most requests in flight.")
    parser.add_argument("--connections", type=int, default=128, help="HTTP connections.")
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--pause", type=float, default=2.0, help="Idle seconds between rates.")
    parser.add_argument("--keep", action="store_true", help="Keep the temp dir.")
    args = parser.parse_args()
    args.rates = [int(r) for r in args.rates.split(",") if r.strip()]
    if os.environ.get("NACHTWACHT_CONFIG"):
        os.environ.pop("NACHTWACHT_CONFIG")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results = asyncio.run(run(args))
    best = max((r["stored_per_s"] for r in results if r["all_stored"]), default=0)
    summary = {
        "summary": True,
        "max_stored_per_s_with_nothing_lost": best,
        "peak_rss_mb": max((r["peak_rss_mb"] for r in results), default=0),
        "nothing_lost": all(r["all_stored"] for r in results),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
