"""Alert latency: from a probe's failure being confirmed to the first webhook at a receiver.

Runs the real pipeline in this process: a `Runtime` (scheduler, alert worker, escalation,
durable outbox sender) on a real store (SQLite in a temp dir unless `--store` says otherwise),
on uvloop when it is installed (as `nachtwacht serve` does), configured from YAML through the
real loader. The webhook receiver runs in a separate process (this script with `--receiver`,
a raw asyncio HTTP/1.1 server) and reports, per request, its arrival time (`time.time()` once
the whole body is in; same host, same clock) and the incident id and kind from the payload.

One `tcp` probe (retries: 0, interval 1 h so only the benchmark triggers it) watches a local
port. Each run:

1. the port stops listening (bound, not listening: connections are refused) and the probe is
   checked (`scheduler.run_now`);
2. a scheduler listener, placed before the alert pipeline's, notes `time.time()` when the
   result that confirms the failure (the transition to critical) has been applied: that is
   "failure confirmed";
3. the result writer commits the new state with its flip at once (not at the next flush) and
   wakes the alert worker, which claims the flip, opens an alert and an incident and queues
   the page in the outbox in one transaction, then wakes the sender, which claims the row and
   POSTs it; the latency is the receiver's arrival time of the incident's first webhook minus
   the confirmation time;
4. the port listens again, the probe is checked, the incident resolves and its resolved
   notice is delivered; then the system idles `--gap` seconds, so each run starts quiet and
   opens a new incident.

Durability: nothing is sent that is not a committed outbox row (the sender only reads rows
from the table). SQLite runs as in production (WAL, `synchronous=NORMAL`: a commit survives
a process kill; `--sqlite-synchronous full` fsyncs every commit, surviving an OS crash too);
PostgreSQL commits with its default `synchronous_commit=on`. The notification rate limit is
raised for the benchmark (`rate_limit_per_minute`), as 2 x `--runs` deliveries to one
webhook in a minute or two would otherwise be deferred by design.

The split of each run, measured in this process with thin wrappers (a few microseconds):
`confirm_to_commit` (the writer commits the state and its flip, then the alert worker's
transaction claims the flip and commits alert, incident and page),
`commit_to_claim` (wake, plan and claim of the row by the sender) and `claim_to_arrival`
(compose the request and POST it, to the receiver's clock).

Prints one JSON object on stdout; progress goes to stderr.

    .venv/bin/python bench/alert_latency.py --runs 200
    .venv/bin/python bench/alert_latency.py --fresh \
        --store postgresql+psycopg://postgres@127.0.0.1/nw_alert_bench
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
import signal
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROBE = "db"

# -- the receiver (a separate process) --------------------------------------------------------

OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


class Receiver(asyncio.Protocol):
    """A minimal HTTP/1.1 keep-alive server: notes when each request body is complete."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            size = 0
            for line in buf[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    size = int(value.strip())
            if len(buf) < end + 4 + size:
                break  # the body is not all here yet
            # the webhook has arrived once its last byte is in: the time, before anything else
            arrival = time.time()
            body = buf[end + 4 : end + 4 + size]
            buf = buf[end + 4 + size :]
            assert self.transport is not None
            self.transport.write(OK_RESPONSE)
            try:
                message = json.loads(body)
                payload = message.get("payload") or {}
                record = {
                    "t": arrival,
                    "incident_id": payload.get("incident_id"),
                    "kind": message.get("kind"),
                }
            except ValueError:
                record = {"t": arrival, "incident_id": None, "kind": "unparsable"}
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()
        self.buffer = buf


async def receiver_main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Receiver, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"ready {port}\n")
    sys.stdout.flush()
    done = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: done.done() or done.set_result(None))
    # stop with the parent: our stdin is its pipe, EOF when it exits
    loop.add_reader(sys.stdin.fileno(), lambda: done.done() or done.set_result(None))
    await done
    server.close()


# -- the benchmark -----------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank, as bench/probes.py computes it."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values_s: list[float]) -> dict[str, float | None]:
    ms = [v * 1000 for v in values_s]
    return {
        "p50_ms": _round(percentile(ms, 50)),
        "p90_ms": _round(percentile(ms, 90)),
        "p99_ms": _round(percentile(ms, 99)),
        "max_ms": _round(max(ms) if ms else None),
        "mean_ms": _round(statistics.fmean(ms) if ms else None),
    }


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def fresh_database(url: str) -> None:
    """Drop and create the database named in a PostgreSQL or MariaDB URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

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


def config_yaml(store_url: str, hook_port: int, target_port: int, rate_limit: int) -> str:
    return f"""
site: bench
store: {{url: "{store_url}"}}
engine: {{startup_spread: 0.1s}}
people:
  contacts:
    - {{id: olga, name: Olga, roles: [oncall_engineer], chat: "@olga"}}
notify:
  rate_limit_per_minute: {rate_limit}
  channels:
    hook: {{kind: webhook, url: "http://127.0.0.1:{hook_port}/hook"}}
probes:
  - {{name: {PROBE}, kind: tcp, host: 127.0.0.1, port: {target_port}, interval: 1h,
      retries: 0, component: database, severity: 1}}
"""


class Target:
    """The probe's port: listening (healthy) or bound but not listening (refused)."""

    def __init__(self) -> None:
        self.sock = self._bound(0)
        self.port: int = self.sock.getsockname()[1]

    @staticmethod
    def _bound(port: int) -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        return sock

    def up(self) -> None:
        self.sock.listen(64)

    def down(self) -> None:
        # a socket cannot stop listening: close it and hold the port again, unlistened
        self.sock.close()
        self.sock = self._bound(self.port)

    def close(self) -> None:
        self.sock.close()


@dataclass
class Marks:
    """Times noted in this process, per run (runs are sequential)."""

    confirmed: float | None = None
    committed: float | None = None
    claimed: float | None = None
    arrivals: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)


@dataclass
class RunResult:
    incident_id: int
    latency: float
    confirm_to_commit: float | None
    commit_to_claim: float | None
    claim_to_arrival: float | None


def instrument(runtime: Any, marks: Marks) -> None:
    from nachtwacht.probes.results import State

    def on_result(rt: Any, result: Any, transition: Any) -> None:
        if transition is not None and transition.to_state is State.CRITICAL:
            marks.confirmed = time.time()

    # first in line: the confirming result has been applied, nothing downstream has run yet
    runtime.scheduler.listeners.insert(0, on_result)

    alerting = runtime.alerting
    handle = alerting._handle

    def timed_handle(flip: Any, configs: Any) -> int:
        queued = handle(flip, configs)  # returns after the alert's transaction has committed
        if queued and marks.committed is None:
            marks.committed = time.time()
        return queued

    alerting._handle = timed_handle

    sender = runtime.sender
    claim = sender._claim

    def timed_claim(*args: Any, **kwargs: Any) -> Any:
        rows, more = claim(*args, **kwargs)
        if rows and marks.claimed is None and marks.committed is not None:
            marks.claimed = time.time()
        return rows, more

    sender._claim = timed_claim


async def read_arrivals(stream: asyncio.StreamReader, marks: Marks) -> None:
    while line := await stream.readline():
        marks.arrivals.put_nowait(json.loads(line))


async def next_arrival(marks: Marks, kind: str, seen: set[Any], timeout: float) -> dict[str, Any]:
    """The next webhook of `kind` for an incident not in `seen` (others are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            record = await marks.arrivals.get()
            if record["kind"] == kind and record["incident_id"] not in seen:
                return record


async def quiet(runtime: Any, limit: float = 10.0) -> None:
    """Wait until no state change waits to be written and no delivery is in flight."""
    end = time.monotonic() + limit
    while runtime.writer.pending or runtime.sender.inflight:
        if time.monotonic() > end:
            raise TimeoutError("the pipeline never went quiet")
        await asyncio.sleep(0.002)


async def one_run(
    runtime: Any, target: Target, marks: Marks, seen: set[Any], timeout: float, gap: float
) -> RunResult:
    marks.confirmed = marks.committed = marks.claimed = None
    target.down()
    await runtime.scheduler.run_now([PROBE])
    if marks.confirmed is None:
        raise RuntimeError("the failing check did not confirm a critical state")
    page = await next_arrival(marks, "emergency_alert", seen, timeout)
    confirmed, committed, claimed = marks.confirmed, marks.committed, marks.claimed
    incident_id = page["incident_id"]
    seen.add(incident_id)
    # recover: the incident resolves and its notice goes out before the next run starts
    target.up()
    await runtime.scheduler.run_now([PROBE])
    await next_arrival(marks, "resolved", set(), timeout)
    await quiet(runtime)
    if gap:
        await asyncio.sleep(gap)
    return RunResult(
        incident_id,
        page["t"] - confirmed,
        committed - confirmed if committed else None,
        claimed - committed if claimed and committed else None,
        page["t"] - claimed if claimed else None,
    )


def sent_pages(store: Any, incident_ids: set[Any]) -> int:
    """How many of these incidents have their page in the outbox table, marked sent."""
    from sqlalchemy import func, select

    from nachtwacht.store import tables as t

    o = t.outbox.c
    with store.connect() as conn:
        return conn.execute(
            select(func.count(func.distinct(o.incident_id))).where(
                o.incident_id.in_(list(incident_ids)),
                o.kind == "emergency_alert",
                o.status == "sent",
            )
        ).scalar_one()


async def start_receiver() -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).resolve()),
        "--receiver",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = (await proc.stdout.readline()).decode().split()
    if len(line) != 2 or line[0] != "ready":
        proc.kill()
        raise SystemExit(f"webhook receiver did not start (said {line!r})")
    return proc, int(line[1])


async def stop_receiver(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def sqlite_synchronous(store: Any, mode: str) -> None:
    """Override the store's `synchronous` pragma (set on connect) for every new connection."""
    from sqlalchemy import event

    @event.listens_for(store.engine, "connect")
    def _pragma(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA synchronous={mode.upper()}")
        cur.close()


async def bench(args: argparse.Namespace, loop_name: str) -> dict[str, Any]:
    from nachtwacht.clock import SystemClock
    from nachtwacht.config.loader import parse_config
    from nachtwacht.engine.runtime import Runtime
    from nachtwacht.store.db import Store

    receiver, hook_port = await start_receiver()
    target = Target()
    target.up()  # healthy at start: the first scheduled check sees it up
    tmp = tempfile.TemporaryDirectory(prefix="nachtwacht-alert-bench-")
    store_url = args.store or f"sqlite:///{tmp.name}/nachtwacht.db"
    if args.store and args.fresh:
        fresh_database(store_url)
    marks = Marks()
    assert receiver.stdout is not None
    reader = asyncio.create_task(read_arrivals(receiver.stdout, marks))
    runtime = None
    store = None
    try:
        yaml_text = config_yaml(store_url, hook_port, target.port, args.rate_limit)
        settings = parse_config(yaml_text, str(Path(tmp.name) / "nachtwacht.yaml"))
        store = Store(store_url)
        sync_mode = None
        if store.dialect == "sqlite":
            sync_mode = args.sqlite_synchronous
            if sync_mode != "normal":
                sqlite_synchronous(store, sync_mode)
        runtime = Runtime.build(settings, store, SystemClock())
        instrument(runtime, marks)
        if args.gc_freeze:
            # move every object alive after startup out of the collector's view, so a full
            # collection scans only what was made since (`nachtwacht serve` does not, yet)
            gc.collect()
            gc.freeze()
        runtime.start()
        log(f"receiver on :{hook_port}; target :{target.port}; store {store.describe()}")
        # the scheduled first check (healthy) settles the probe's state before the runs
        end = time.monotonic() + 10
        while not runtime.scheduler.by_name[PROBE].checks:
            if time.monotonic() > end:
                raise SystemExit("the probe never ran its first check")
            await asyncio.sleep(0.01)

        seen: set[Any] = set()
        cold: list[RunResult] = []
        for _ in range(args.warmup):
            cold.append(await one_run(runtime, target, marks, seen, args.timeout, args.gap))
        log(
            f"warm-up: {args.warmup} runs, first {cold[0].latency * 1000:.1f} ms"
            if cold
            else "no warm-up"
        )
        results: list[RunResult] = []
        started = time.perf_counter()
        for i in range(args.runs):
            results.append(await one_run(runtime, target, marks, seen, args.timeout, args.gap))
            if (i + 1) % 50 == 0:
                recent = [r.latency * 1000 for r in results[-50:]]
                log(f"{i + 1} runs; last 50: max {max(recent):.1f} ms")
        elapsed = time.perf_counter() - started
        sender_sent, sender_failed = runtime.sender.sent, runtime.sender.failed
        paged = await asyncio.to_thread(sent_pages, store, seen)

        def split(name: str) -> dict[str, float | None]:
            values = [getattr(r, name) for r in results if getattr(r, name) is not None]
            s = summary(values)
            return {"p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"], "max_ms": s["max_ms"]}

        out: dict[str, Any] = {"runs": len(results)}
        out.update(summary([r.latency for r in results]))
        out.update(
            {
                "target_p99_ms": 50,
                "met": (percentile([r.latency * 1000 for r in results], 99) or 1e9) < 50,
                "split": {
                    "confirm_to_commit": split("confirm_to_commit"),
                    "commit_to_claim": split("commit_to_claim"),
                    "claim_to_arrival": split("claim_to_arrival"),
                },
                "cold_first_run_ms": _round(cold[0].latency * 1000) if cold else None,
                "warmup_runs": args.warmup,
                "gap_s": args.gap,
                "wall_s": round(elapsed, 1),
                "store": store.dialect,
                "sqlite_synchronous": sync_mode,
                # every page that arrived is a committed outbox row, marked sent
                "durable": paged == len(seen),
                "deliveries_sent": sender_sent,
                "deliveries_failed": sender_failed,
                "rate_limit_per_minute": args.rate_limit,
                "gc_freeze": args.gc_freeze,
                "python": platform.python_version(),
                "loop": loop_name,
                "nproc": os.cpu_count(),
                "cpu": cpu_model(),
            }
        )
        return out
    finally:
        if runtime is not None:
            await runtime.stop()
        if store is not None:
            store.dispose()
        target.close()
        await stop_receiver(receiver)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        tmp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="measured failures (incidents)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured runs first")
    parser.add_argument(
        "--gap", type=float, default=0.05, help="idle seconds between runs (quiet system)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="give up on a run after this")
    parser.add_argument("--store", default=None, help="store URL (default: SQLite in a temp dir)")
    parser.add_argument(
        "--fresh", action="store_true", help="drop and create the --store database first"
    )
    parser.add_argument(
        "--sqlite-synchronous",
        choices=("normal", "full"),
        default="normal",
        help="SQLite commit durability: normal (production default) or full (fsync each)",
    )
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=100_000,
        help="notify.rate_limit_per_minute (high: every run's deliveries go to one webhook)",
    )
    parser.add_argument(
        "--gc-freeze", action="store_true", help="gc.freeze() after startup (not what serve does)"
    )
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

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
    if args.receiver:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(receiver_main())
        return
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(bench(args, loop_name))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
