"""Probe engine benchmark: N HTTP probes at interval I against a local target server.

Runs the real engine (`Runtime`: scheduler, batched writer, rollups and retention modules) on
a real store (SQLite in a temp dir unless `--store` says otherwise), with uvloop when it is
installed (as `nachtwacht serve` does), configured from a generated nachtwacht.yaml through
the real loader. The HTTP target runs in a separate process (bench/target.py) so that only
Nachtwacht's own CPU is counted.

After a warm-up of one interval it measures for `--duration` seconds: checks per second,
scheduling lag p50/p99 (how late each check started against its due time; the engine counts
an early start as 0), CPU cores used and CPU seconds per 1,000 checks (psutil CPU-time deltas
of this process, every thread), and peak RSS. Then it measures two restarts:

- in process: stop the runtime, parse the config again, build a new runtime on the same store
  and time until every probe has completed a check (`restart_all_running_s`);
- a real one (unless `--no-process-restart`): start `nachtwacht serve` on the same config and
  store and time, from the moment the process is started, until the store shows a check newer
  than that moment for every probe (`process_restart_all_running_s`; the writer flushes every
  second, so this can read up to a second late).

Prints one JSON object on stdout; progress goes to stderr.

    .venv/bin/python bench/probes.py --probes 10000 --interval 30 --duration 120
    .venv/bin/python bench/probes.py --fresh \
        --store postgresql+psycopg://postgres@127.0.0.1/nw_probes_bench
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from nachtwacht.clock import SystemClock
from nachtwacht.config.loader import parse_config
from nachtwacht.engine.runtime import Runtime
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store

HERE = Path(__file__).resolve().parent
STATUS_NAMES = {0: "ok", 1: "warning", 2: "critical", 3: "unknown"}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def start_target() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "target.py"), "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "ready":
        proc.kill()
        raise SystemExit(f"target server did not start (said {line!r})")
    return proc, int(line[1])


def stop_process(proc: subprocess.Popen[Any], grace: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def config_yaml(store_url: str, port: int, n: int, interval: float, spread: float) -> str:
    lines = [
        f"store:\n  url: {store_url}\n",
        f"engine:\n  startup_spread: {spread:g}s\n",
        "probes:\n",
    ]
    for i in range(n):
        # distinct paths, one host: every probe shares the keep-alive pool as in production
        lines.append(
            f"  - name: http-{i:05d}\n"
            f"    kind: http\n"
            f"    url: http://127.0.0.1:{port}/p/{i}\n"
            f"    interval: {interval:g}s\n"
            f"    timeout: 10s\n"
            f"    component: c{i % 50}\n"
        )
    return "".join(lines)


def fresh_database(url: str) -> None:
    """Drop and create the database named in a PostgreSQL or MariaDB URL."""
    parsed = make_url(url)
    name = parsed.database
    if not name:
        raise SystemExit("--fresh needs a database name in the store URL")
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
        quoted = f'"{name}"'
    elif backend == "mysql":
        admin = create_engine(parsed.set(database=""), isolation_level="AUTOCOMMIT")
        quoted = f"`{name}`"
    else:
        raise SystemExit("--fresh is for PostgreSQL and MariaDB URLs")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {quoted}"))
        conn.execute(text(f"CREATE DATABASE {quoted}"))
    admin.dispose()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def loop_thread_cpu(process: psutil.Process) -> float:
    """CPU seconds of the main (event-loop) thread; on Linux its thread id is the pid."""
    for thread in process.threads():
        if thread.id == process.pid:
            return thread.user_time + thread.system_time
    return 0.0


class Sampler:
    """Drains the scheduler's lag window and samples RSS while the measurement runs."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.lags: list[float] = []
        self.rss_max = 0
        self.process = psutil.Process()
        self.measuring = False

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            self.drain()
            self.rss_max = max(self.rss_max, self.process.memory_info().rss)

    def drain(self) -> None:
        window = self.runtime.scheduler.stats.lags_ms  # a bounded deque: empty it often
        taken = list(window)
        window.clear()
        if self.measuring:
            self.lags.extend(taken)


async def wait_all_checked(runtime: Runtime, limit: float) -> bool:
    started = time.perf_counter()
    runtimes = list(runtime.scheduler.slots.values())
    while time.perf_counter() - started < limit:
        if all(r.checks for r in runtimes):
            return True
        await asyncio.sleep(0.05)
    return False


def count_results(store: Store, since: float, until: float) -> dict[str, int]:
    with store.connect() as conn:
        rows = conn.execute(
            select(t.results.c.status, func.count())
            .where(t.results.c.ts >= since, t.results.c.ts < until)
            .group_by(t.results.c.status)
        ).all()
    return {STATUS_NAMES.get(status, str(status)): count for status, count in rows}


SERVER_NAMES = {"postgresql": ("postgres",), "mysql": ("mariadbd", "mysqld")}


def server_cpu(dialect: str) -> float | None:
    """CPU seconds of the local database server's processes (None for SQLite).

    Counts every client of that server, so it is only meaningful on an otherwise idle one.
    """
    names = SERVER_NAMES.get(dialect)
    if not names:
        return None
    total = 0.0
    for proc in psutil.process_iter(["name", "cpu_times"]):
        times = proc.info["cpu_times"]
        if proc.info["name"] in names and times is not None:
            total += times.user + times.system
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_restart(config_file: Path, store_url: str, n: int, limit: float) -> float | None:
    """Start `nachtwacht serve`; seconds until the store shows a fresh check for every probe."""
    store = Store(store_url)
    started_wall = time.time()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nachtwacht",
            "serve",
            "-c",
            str(config_file),
            "--port",
            str(free_port()),
            "--log-level",
            "warning",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    fresh = select(func.count()).where(t.probe_state.c.last_check >= started_wall)
    try:
        while time.perf_counter() - started < limit:
            time.sleep(0.25)
            if proc.poll() is not None:
                log(f"nachtwacht serve exited with {proc.returncode}")
                return None
            with contextlib.suppress(Exception), store.connect() as conn:
                if conn.execute(fresh).scalar() == n:
                    return time.perf_counter() - started
        return None
    finally:
        stop_process(proc)
        store.dispose()


async def bench(args: argparse.Namespace, loop_name: str) -> dict[str, Any]:
    target, port = start_target()
    tmp = tempfile.TemporaryDirectory(prefix="nachtwacht-bench-")
    store_url = args.store or f"sqlite:///{tmp.name}/nachtwacht.db"
    if args.store and args.fresh:
        fresh_database(store_url)
    process = psutil.Process()
    out: dict[str, Any] = {}
    try:
        log(f"target on 127.0.0.1:{port}; store {store_url}; loop {loop_name}")
        yaml_text = config_yaml(store_url, port, args.probes, args.interval, args.spread)
        config_file = Path(tmp.name) / "nachtwacht.yaml"
        config_file.write_text(yaml_text, encoding="utf-8")
        t0 = time.perf_counter()
        settings = parse_config(yaml_text, str(config_file))
        parse_s = time.perf_counter() - t0
        store = Store(store_url)
        runtime = Runtime.build(settings, store, SystemClock())
        build_s = time.perf_counter() - t0 - parse_s
        log(f"{args.probes} probes: config {parse_s:.1f}s, build {build_s:.1f}s")
        if args.batch_window is not None:
            runtime.scheduler.batch_window = args.batch_window
        runtime_batch_window = runtime.scheduler.batch_window
        del settings
        gc.collect()
        runtime.start()
        sampler = Sampler(runtime)
        stop_sampler = asyncio.Event()
        sampler_task = asyncio.create_task(sampler.run(stop_sampler))

        log(f"warming up {args.warmup:g}s")
        await asyncio.sleep(args.warmup)
        sampler.drain()
        sampler.measuring = True
        sampler.rss_max = process.memory_info().rss
        checks0 = runtime.scheduler.stats.checks
        cpu0 = process.cpu_times()
        loop_cpu0 = loop_thread_cpu(process)
        server_cpu0 = server_cpu(store.dialect)
        machine0 = psutil.cpu_times()
        ctx0 = process.num_ctx_switches()
        wall0 = time.perf_counter()
        ts0 = time.time()
        log(f"measuring {args.duration:g}s")
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        await asyncio.sleep(args.duration)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        cpu1 = process.cpu_times()
        loop_cpu1 = loop_thread_cpu(process)
        server_cpu1 = server_cpu(store.dialect)
        machine1 = psutil.cpu_times()
        ctx1 = process.num_ctx_switches()
        wall1 = time.perf_counter()
        ts1 = time.time()
        checks = runtime.scheduler.stats.checks - checks0
        sampler.drain()
        sampler.measuring = False
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        stop_sampler.set()
        await sampler_task

        elapsed = wall1 - wall0
        user = cpu1.user - cpu0.user
        system = cpu1.system - cpu0.system
        cpu = user + system
        loop_cpu = loop_cpu1 - loop_cpu0
        lags = sampler.lags
        out.update(
            {
                "probes": args.probes,
                "interval": args.interval,
                "duration": round(elapsed, 1),
                "checks": checks,
                "checks_per_sec": round(checks / elapsed, 1),
                "expected_per_sec": round(args.probes / args.interval, 1),
                "lag_p50_ms": _round(percentile(lags, 50)),
                "lag_p99_ms": _round(percentile(lags, 99)),
                "lag_max_ms": _round(max(lags) if lags else None),
                "cpu_cores": round(cpu / elapsed, 3),
                "cpu_seconds_per_1000_checks": round(cpu / checks * 1000, 3) if checks else None,
                "cpu_user_s": round(user, 2),
                "cpu_system_s": round(system, 2),
                # the event-loop thread (scheduler, HTTP) vs worker threads (store, rollups)
                "cpu_loop_thread_s": round(loop_cpu, 2),
                "cpu_worker_threads_s": round(cpu - loop_cpu, 2),
                "voluntary_ctx_switches_per_sec": round(
                    (ctx1.voluntary - ctx0.voluntary) / elapsed, 1
                ),
                "store_server_cpu_cores": (
                    None
                    if server_cpu0 is None or server_cpu1 is None
                    else round((server_cpu1 - server_cpu0) / elapsed, 3)
                ),
                # everything busy on the machine (us, the target, other work): a noisy
                # neighbour shows here and makes the run less trustworthy
                "machine_cpu_cores_busy": round(
                    (
                        sum(machine1)
                        - machine1.idle
                        - machine1.iowait
                        - (sum(machine0) - machine0.idle - machine0.iowait)
                    )
                    / elapsed,
                    3,
                ),
                "peak_rss_mb": round(peak_rss / 2**20, 1),
                "rss_max_in_window_mb": round(sampler.rss_max / 2**20, 1),
                "config_parse_s": round(parse_s, 2),
                "build_s": round(build_s, 2),
            }
        )
        log("stopping the runtime")
        await runtime.stop()
        out["results_in_window"] = count_results(store, ts0, ts1)
        store.dispose()
        del runtime, sampler
        gc.collect()

        # an in-process restart: parse the config again, new store handle, new runtime
        log("restart in process")
        t1 = time.perf_counter()
        settings = parse_config(yaml_text, str(config_file))
        store2 = Store(store_url)
        runtime2 = Runtime.build(settings, store2, SystemClock())
        rebuild_s = time.perf_counter() - t1
        runtime2.start()
        remaining = max(1.0, args.restart_limit - (time.perf_counter() - t1))
        done = await wait_all_checked(runtime2, remaining)
        restart_s = (time.perf_counter() - t1) if done else None
        await runtime2.stop()
        store2.dispose()
        out["restart_config_and_build_s"] = round(rebuild_s, 2)
        out["restart_all_running_s"] = _round(restart_s)
        log(f"in-process restart: all probes checked after {restart_s}")

        if not args.no_process_restart:
            log("restart as a new `nachtwacht serve` process")
            proc_s = await asyncio.to_thread(
                process_restart, config_file, store_url, args.probes, args.restart_limit
            )
            out["process_restart_all_running_s"] = _round(proc_s)
            log(f"process restart: all probes checked after {proc_s}")

        out.update(
            {
                "startup_spread": args.spread,
                "batch_window": runtime_batch_window,
                "store": store.dialect,
                "python": platform.python_version(),
                "loop": loop_name,
            }
        )
        return out
    finally:
        stop_process(target, 5)
        tmp.cleanup()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=10_000, help="number of HTTP probes")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between checks")
    parser.add_argument(
        "--duration", type=float, default=120.0, help="seconds measured after the warm-up"
    )
    parser.add_argument(
        "--warmup", type=float, default=None, help="seconds before measuring (default: interval)"
    )
    parser.add_argument("--spread", type=float, default=25.0, help="engine.startup_spread")
    parser.add_argument(
        "--restart-limit", type=float, default=120.0, help="give up waiting after a restart"
    )
    parser.add_argument("--store", default=None, help="store URL (default: SQLite in a temp dir)")
    parser.add_argument(
        "--fresh", action="store_true", help="drop and create the --store database first"
    )
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    parser.add_argument(
        "--no-process-restart", action="store_true", help="skip the `nachtwacht serve` restart"
    )
    parser.add_argument(
        "--batch-window",
        type=float,
        default=None,
        help="override the scheduler's batch window in seconds (0 = start each check alone)",
    )
    parser.add_argument(
        "--profile",
        default=None,
        help="write a cProfile of the event-loop thread over the window here (inflates CPU)",
    )
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = args.interval
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)

    loop_factory = None
    loop_name = "asyncio"
    if not args.no_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            loop_factory = uvloop.new_event_loop
            loop_name = f"uvloop {uvloop.__version__}"
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(bench(args, loop_name))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
