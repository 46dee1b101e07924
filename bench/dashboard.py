"""Dashboard benchmark: overview page, status-grid fragment and 30-day chart data under load.

Fills a store (SQLite in a temp dir unless `--store` says otherwise; a server database must be
empty) with N probes and 30 days of history, the fast way: rows are written with executemany
exactly as the engine's writer and rollup modules would have left them, i.e.

- `probes` rows (through `probes.service.sync_probes`, as `Runtime.build` does) and a
  `probe_state` row per probe (most ok, some warning, critical or pending);
- `rollup_hour`: one row per probe per hour for 30 days (interval 60 s, so n = 60 each);
- `rollup_minute`: one row per probe per minute for the last `--minute-hours` (default 24 h;
  the engine keeps 14 days, `--full-retention` loads them all: 20,160 rows per probe);
- raw `results`: one per probe per minute for the last `--raw-hours` (default 2; the engine
  keeps 48 h, `--full-retention` loads them);
- a few `state_changes` per probe, an open incident per component with a critical probe, and
  the rollup watermarks (`engine_meta`) where the rollup module would have left them.

Then it serves the real app (`create_app` under uvicorn with uvloop, as `nachtwacht serve`
does) in a child process, engine off (default; start-up objects are frozen out of the garbage
collector as `serve` does) or on (`--engine`: tcp probes against a local target). It times
with httpx on one kept-alive connection, logged in with an API token
(`auth.service.create_token`), `--requests` sequential requests (after 3 warm-up ones) of:

- `overview`: GET / (the HTML page; falls back to GET /api/v1/status while no page exists);
- `grid`: the status-grid fragment the overview polls (its `hx-get`, read from the page);
- `rollups_30d_hour`: GET /api/v1/probes/{name}/rollups?resolution=hour over 30 days, for a
  different probe each time;
- `probe_page`: GET /probes/{name} when that page exists.

Each gets p50/p95/max in ms and the server CPU per request; `overview_first_request_ms` is
the first view after the start (templates compiled, nothing cached yet). The page caches its
uptime sums until the rollup watermarks move, which they do not while the bench holds still;
so `overview_after_new_minute` and `overview_after_new_hour` time GET / right after the bench
has done what the rollup module does once a minute and once an hour (one more rollup row per
probe, watermark moved on): what someone who opens the dashboard now and then gets.

Then it adds probes up to the next size (default 1000, then 4000) and measures again. Prints
one JSON object on stdout; progress goes to stderr. Latencies include httpx's own client cost
(about 1-2 ms per request here).

    .venv/bin/python bench/dashboard.py
    .venv/bin/python bench/dashboard.py --sizes 1000 --requests 100 --engine
    .venv/bin/python bench/dashboard.py --profile /tmp/dash-prof   # cProfile of the server
    .venv/bin/python bench/dashboard.py --store postgresql+psycopg://postgres@127.0.0.1/nw_dash
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import Connection, bindparam, func, select, update

from nachtwacht.auth.tokens import create_token
from nachtwacht.config.loader import load_config
from nachtwacht.config.schema import Settings
from nachtwacht.incidents import service as incidents
from nachtwacht.probes import service as probes
from nachtwacht.probes.rollups import HOUR_KEY, MINUTE_KEY
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store

HERE = Path(__file__).resolve().parent
DAYS = 30
INTERVAL = 60  # seconds between checks of one probe: one raw result and one minute row a minute
PROBES_PER_COMPONENT = 20
CHUNK = 20_000  # rows per executemany call
TARGETS_MS = {1000: 200.0, 4000: 300.0}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the store ---------------------------------------------------------------------------------


def config_yaml(store_url: str, n: int, target_port: int) -> str:
    """N tcp probes in components of PROBES_PER_COMPONENT, interval 60 s."""
    components = math.ceil(n / PROBES_PER_COMPONENT)
    lines = [
        "site: dashboard-bench",
        f'store: {{url: "{store_url}"}}',
        # spread the first checks over a whole interval, as a real restart would
        f"engine: {{startup_spread: {INTERVAL}s, flush_interval: 1s}}",
        "components:",
        *(f"  c{c:03d}: Component {c}" for c in range(components)),
        "probes:",
    ]
    for i in range(n):
        lines.append(
            f"  - {{name: p{i:05d}, kind: tcp, host: 127.0.0.1, port: {target_port}, "
            f"interval: {INTERVAL}s, component: c{i // PROBES_PER_COMPONENT:03d}}}"
        )
    return "\n".join(lines) + "\n"


def insert_rows(conn: Connection, table: Any, columns: Sequence[str], rows: Iterator[tuple]) -> int:
    """executemany with plain tuples in chunks: the driver's own fast path on every dialect."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "
        f"VALUES ({', '.join(mark for _ in columns)})"
    )
    count = 0
    chunk: list[tuple] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= CHUNK:
            conn.exec_driver_sql(sql, chunk)
            count += len(chunk)
            chunk = []
    if chunk:
        conn.exec_driver_sql(sql, chunk)
        count += len(chunk)
    return count


ROLLUP_COLUMNS = [
    "probe_id",
    "bucket",
    "n",
    "n_ok",
    "n_warning",
    "n_critical",
    "n_unknown",
    "latency_sum",
    "latency_min",
    "latency_max",
    "value_sum",
    "value_min",
    "value_max",
]


def _hour_rows(ids: list[int], first: int, last: int, rng: random.Random) -> Iterator[tuple]:
    per_hour = 3600 // INTERVAL
    for pid in ids:
        base = rng.uniform(0.2, 40.0)  # each probe's typical latency, ms
        for hour in range(first, last):
            bad = rng.random() < 0.01  # one hour in a hundred had failures
            crit = rng.randint(1, 10) if bad else 0
            warn = 1 if rng.random() < 0.02 else 0
            lat = base * rng.uniform(0.8, 1.3)
            lo, hi = lat * 0.6, lat * rng.uniform(1.5, 4.0)
            total = lat * per_hour
            yield (
                pid,
                hour,
                per_hour,
                per_hour - crit - warn,
                warn,
                crit,
                0,
                total,
                lo,
                hi,
                total,
                lo,
                hi,
            )


def _minute_rows(ids: list[int], first: int, last: int, rng: random.Random) -> Iterator[tuple]:
    for pid in ids:
        base = rng.uniform(0.2, 40.0)
        for minute in range(first, last):
            lat = base * rng.uniform(0.7, 1.5)
            status = 2 if rng.random() < 0.002 else 0
            yield (
                pid,
                minute,
                minute // 60,
                1,
                int(status == 0),
                0,
                int(status == 2),
                0,
                lat,
                lat,
                lat,
                lat,
                lat,
                lat,
            )


def _raw_rows(ids: list[int], first: int, last: int, rng: random.Random) -> Iterator[tuple]:
    for pid in ids:
        base = rng.uniform(0.2, 40.0)
        offset = rng.uniform(0, INTERVAL)
        for minute in range(first, last):
            lat = base * rng.uniform(0.7, 1.5)
            ts = minute * 60 + offset
            yield (
                pid,
                ts,
                minute,
                0,
                lat,
                lat,
                rng.uniform(0, 3),
                f"connected to 127.0.0.1:9 in {lat:.1f} ms",
            )


# probe_state columns, bound as s_<column> (a bind name may not be a column name in an UPDATE)
STATE_COLUMNS = (
    "state",
    "since",
    "last_check",
    "last_status",
    "last_value",
    "last_latency_ms",
    "last_message",
    "failures",
    "first_failure",
)


def _states(ids: list[int], now: float, rng: random.Random) -> dict[int, dict[str, Any]]:
    """Most probes ok; 2% critical, 3% warning, 1% pending, as a bad day would look."""
    out = {}
    for pid in ids:
        roll = rng.random()
        state, status = (
            ("critical", 2)
            if roll < 0.02
            else ("warning", 1)
            if roll < 0.05
            else ("pending", 2)
            if roll < 0.06
            else ("ok", 0)
        )
        lat = rng.uniform(0.2, 40.0)
        failing = state != "ok"
        out[pid] = {
            "pid": pid,
            "s_state": state,
            "s_since": now - rng.uniform(60, 20 * 86400),
            "s_last_check": now - rng.uniform(0, INTERVAL),
            "s_last_status": status,
            "s_last_value": lat,
            "s_last_latency_ms": lat,
            "s_last_message": (
                "connection refused by 127.0.0.1:9"
                if status == 2
                else f"connected to 127.0.0.1:9 in {lat:.1f} ms"
            ),
            "s_failures": rng.randint(1, 5) if failing else 0,
            "s_first_failure": now - rng.uniform(60, 3600) if failing else None,
        }
    return out


def _state_changes(
    states: dict[int, dict[str, Any]], now: float, rng: random.Random
) -> Iterator[tuple]:
    """Four earlier flaps per probe in the 30 days, then the change into today's state."""
    for pid, s in states.items():
        for _ in range(2):
            down = now - rng.uniform(86400, DAYS * 86400)
            yield (pid, down, "ok", "critical", 2, None, "connection refused", down)
            yield (pid, down + rng.uniform(60, 1800), "critical", "ok", 0, 1.0, "connected", None)
        if s["s_state"] != "ok":
            yield (
                pid,
                s["s_since"],
                "ok",
                s["s_state"],
                s["s_last_status"],
                None,
                s["s_last_message"],
                s["s_first_failure"],
            )


def fill(
    store: Store,
    settings: Settings,
    now: float,
    *,
    minute_hours: float,
    raw_hours: float,
    seed: int,
) -> dict[str, Any]:
    """Add the probes of `settings` that the store lacks, with their history; return counts."""
    rng = random.Random(seed)
    started = time.perf_counter()
    counts: dict[str, int] = {}
    with store.begin() as conn:
        known = set(conn.execute(select(t.probes.c.id)).scalars())
        ids = probes.sync_probes(conn, settings.probes, now)
        new = sorted(pid for pid in ids.values() if pid not in known)
        hour_now, minute_now = int(now // 3600), int(now // 60)
        states = _states(new, now, rng)
        conn.execute(
            update(t.probe_state)
            .where(t.probe_state.c.probe_id == bindparam("pid"))
            .values(**{c: bindparam(f"s_{c}") for c in STATE_COLUMNS}),
            list(states.values()),
        )
        counts["rollup_hour"] = insert_rows(
            conn,
            t.rollup_hour,
            ROLLUP_COLUMNS,
            _hour_rows(new, hour_now - DAYS * 24, hour_now, rng),
        )
        counts["rollup_minute"] = insert_rows(
            conn,
            t.rollup_minute,
            ["probe_id", "bucket", "hour", *ROLLUP_COLUMNS[2:]],
            _minute_rows(new, minute_now - int(minute_hours * 60), minute_now, rng),
        )
        counts["results"] = insert_rows(
            conn,
            t.results,
            ["probe_id", "ts", "minute", "status", "value", "latency_ms", "lag_ms", "message"],
            _raw_rows(new, minute_now - int(raw_hours * 60), minute_now, rng),
        )
        counts["state_changes"] = insert_rows(
            conn,
            t.state_changes,
            [
                "probe_id",
                "ts",
                "from_state",
                "to_state",
                "status",
                "value",
                "message",
                "first_failure",
            ],
            _state_changes(states, now, rng),
        )
        # an open incident per component with a critical probe, as the alert pipeline opens
        by_id = {pid: name for name, pid in ids.items()}
        component_of = {p.name: p.component for p in settings.probes}
        failing = sorted(
            {component_of[by_id[pid]] for pid, s in states.items() if s["s_state"] == "critical"}
        )
        for component in failing:
            if incidents.open_for_component(conn, component) is None:
                incidents.open_incident(
                    conn,
                    settings,
                    title=f"{component} is down",
                    severity=2,
                    now=now - rng.uniform(60, 3600),
                    component=component,
                )
        counts["incidents_opened"] = len(failing)
        # the rollup module's watermarks: minutes and hours before now are rolled up (a later
        # size keeps the marks an earlier one moved on: watermarks never go back)
        for key, mark in ((MINUTE_KEY, minute_now), (HOUR_KEY, hour_now)):
            if store.get_meta(conn, key) is None:
                store.set_meta(conn, key, mark, now)
    counts["new_probes"] = len(new)
    counts["seconds"] = round(time.perf_counter() - started, 1)
    return counts


def table_sizes(store: Store) -> dict[str, int]:
    with store.connect() as conn:
        return {
            table.name: int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)
            for table in (t.probes, t.rollup_hour, t.rollup_minute, t.results, t.state_changes)
        }


def require_empty(store: Store) -> None:
    with store.connect() as conn:
        if conn.execute(select(func.count()).select_from(t.probes)).scalar():
            raise SystemExit(f"the store {store.describe()} already has probes: give an empty one")


# -- the server --------------------------------------------------------------------------------


def serve_child(config: str, port: int, engine: bool, profile: str | None) -> None:
    """Runs in the child process: the real app under uvicorn, as `nachtwacht serve` runs it."""
    import uvicorn

    from nachtwacht.web.app import create_app

    settings = load_config(config)
    app = create_app(settings, start_engine=engine)
    if not engine:
        # `nachtwacht serve` runs the engine, and create_app then moves everything built at
        # start-up out of the collector's way (gc.freeze). Do the same without the engine, so
        # that full collections here cost what they cost in the real server.
        inner = app.router.lifespan_context

        @contextlib.asynccontextmanager
        async def lifespan(app_: Any) -> AsyncIterator[Any]:
            async with inner(app_) as state:
                gc.collect()
                gc.freeze()
                yield state

        app.router.lifespan_context = lifespan
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"

    def run() -> None:
        uvicorn.run(
            app, host="127.0.0.1", port=port, log_level="warning", loop=loop, access_log=False
        )

    if profile is None:
        run()
        return
    import cProfile
    import pstats
    import threading

    # requests are handled on the event loop and in worker threads (asyncio.to_thread):
    # give every thread its own profiler (cProfile sees one thread each) and merge them at exit
    profilers: list[cProfile.Profile] = []

    def profile_this_thread(*_: object) -> None:
        prof = cProfile.Profile()
        profilers.append(prof)
        prof.enable()  # replaces this hook as the thread's profile function

    threading.setprofile(profile_this_thread)
    # uvicorn re-raises SIGTERM after its graceful shutdown; exit through `finally` instead
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main_prof = cProfile.Profile()
    main_prof.enable()
    try:
        run()
    finally:
        main_prof.disable()
        stats = pstats.Stats(main_prof)
        for prof in profilers:
            prof.create_stats()
            stats.add(prof)
        stats.dump_stats(profile)


def start_server(
    config: Path, port: int, engine: bool, profile: str | None
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-serve", str(config)]
    cmd += ["--port", str(port)] + (["--engine"] if engine else [])
    cmd += ["--profile-out", profile] if profile else []
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    end = time.monotonic() + 300
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} before it served")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code in (200, 503):
                return proc
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start within 300 s")


def stop_process(proc: subprocess.Popen[Any], grace: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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


# -- measuring ---------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def timed(
    client: httpx.Client, server: psutil.Process, paths: Sequence[str], requests: int
) -> dict[str, Any]:
    """Warm up with 3 requests, then time `requests` of them (cycling through `paths`)."""
    for path in paths[:3] if len(paths) >= 3 else list(paths) * 3:
        client.get(path).raise_for_status()
    took: list[float] = []
    size = 0
    cpu0 = sum(server.cpu_times()[:2])
    for i in range(requests):
        path = paths[i % len(paths)]
        start = time.perf_counter()
        response = client.get(path)
        took.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"GET {path}: {response.status_code} {response.text[:300]}")
        size = len(response.content)
    cpu1 = sum(server.cpu_times()[:2])
    return {
        "path": paths[0],
        "requests": requests,
        "p50_ms": round(percentile(took, 0.5), 1),
        "p95_ms": round(percentile(took, 0.95), 1),
        "max_ms": round(max(took), 1),
        "server_cpu_ms_per_request": round((cpu1 - cpu0) * 1000 / requests, 1),
        "bytes": size,
    }


def grid_path(html: str) -> str | None:
    """The hx-get of the element with id="status-grid", if the page has one."""
    for tag in re.findall(r"<[a-zA-Z][^>]*>", html):
        if re.search(r"""\bid=["']status-grid["']""", tag):
            found = re.search(r"""\bhx-get=["']([^"']+)["']""", tag)
            return found.group(1).replace("&amp;", "&") if found else None
    return None


def roll_up_next(store: Store, part: str, rng: random.Random) -> None:
    """What the rollup module does once a minute (part="minute") or once an hour ("hour"):
    add the next bucket's rollup row for every probe and move that watermark on by one."""
    key, table = (MINUTE_KEY, t.rollup_minute) if part == "minute" else (HOUR_KEY, t.rollup_hour)
    with store.begin() as conn:
        mark = int(store.get_meta(conn, key))
        ids = list(conn.execute(select(t.probes.c.id)).scalars())
        if part == "minute":
            rows = _minute_rows(ids, mark, mark + 1, rng)
            insert_rows(conn, table, ["probe_id", "bucket", "hour", *ROLLUP_COLUMNS[2:]], rows)
        else:
            insert_rows(conn, table, ROLLUP_COLUMNS, _hour_rows(ids, mark, mark + 1, rng))
        store.set_meta(conn, key, mark + 1, time.time())


def after_rollups(
    client: httpx.Client, store: Store, part: str, samples: int, rng: random.Random
) -> dict[str, Any]:
    """GET / right after the rollup module moved a watermark: the page's cached uptime sums
    are stale then, as they are for most people who open the dashboard (not every 5 s)."""
    took = []
    for _ in range(samples):
        roll_up_next(store, part, rng)
        start = time.perf_counter()
        client.get("/").raise_for_status()
        took.append((time.perf_counter() - start) * 1000)
    return {
        "samples": samples,
        "p50_ms": round(percentile(took, 0.5), 1),
        "max_ms": round(max(took), 1),
    }


def measure(
    base: str,
    token: str,
    server: psutil.Process,
    n: int,
    requests: int,
    store: Store,
    engine: bool,
) -> dict:
    out: dict[str, Any] = {}
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/html"}
    rng = random.Random(n)
    names = [f"p{rng.randrange(n):05d}" for _ in range(requests)]
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        start = time.perf_counter()
        page = client.get("/")
        # the first view after a start: templates compiled, uptime sums read from the rollups
        out["overview_first_request_ms"] = round((time.perf_counter() - start) * 1000, 1)
        overview = "/" if page.status_code == 200 else "/api/v1/status"
        if overview == "/":
            cells = len(re.findall(r"\bdata-probe=", page.text))
            out["overview_probe_cells"] = cells
            if cells < n:
                log(f"note: the overview shows {cells} data-probe cells for {n} probes")
        else:
            log(f"GET / answered {page.status_code}: timing /api/v1/status instead")
        out["overview"] = timed(client, server, [overview], requests)
        # with the engine on, its own rollup module moves the watermarks (and owns the rows)
        if overview == "/" and not engine:
            out["overview_after_new_minute"] = after_rollups(client, store, "minute", 10, rng)
            out["overview_after_new_hour"] = after_rollups(client, store, "hour", 3, rng)
        grid = grid_path(page.text) if overview == "/" else None
        if grid:
            out["grid"] = timed(client, server, [grid], requests)
        since = time.time() - DAYS * 86400
        chart = [
            f"/api/v1/probes/{name}/rollups?resolution=hour&since={since:.0f}" for name in names
        ]
        out["rollups_30d_hour"] = timed(client, server, chart, requests)
        rows = client.get(chart[0]).json()
        out["rollups_30d_hour"]["rows"] = len(rows)
        if client.get(f"/probes/{names[0]}").status_code == 200:
            out["probe_page"] = timed(client, server, [f"/probes/{x}" for x in names], requests)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--requests", type=int, default=50, help="timed requests per endpoint")
    parser.add_argument(
        "--store", help="store URL (an empty database); default SQLite in a tmp dir"
    )
    parser.add_argument("--engine", action="store_true", help="run the probe engine too")
    parser.add_argument("--minute-hours", type=float, default=24.0)
    parser.add_argument("--raw-hours", type=float, default=2.0)
    parser.add_argument(
        "--full-retention", action="store_true", help="minute rollups 14 d, raw results 48 h"
    )
    parser.add_argument("--profile", help="directory for a cProfile of the server per size")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child-serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_serve:
        serve_child(args.child_serve, args.port, args.engine, args.profile_out)
        return
    if args.full_retention:
        args.minute_hours, args.raw_hours = 14 * 24.0, 48.0

    load_at_start = round(os.getloadavg()[0], 2)
    workdir = Path(tempfile.mkdtemp(prefix="nw-dash-bench-"))
    url = args.store or f"sqlite:///{workdir / 'nachtwacht.db'}"
    store = Store(url)
    store.migrate()
    require_empty(store)
    target, target_port = start_target() if args.engine else (None, 9)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    now = time.time()
    with store.begin() as conn:
        token = create_token(conn, "dashboard-bench", "viewer", now, actor="bench")["token"]
    runs = []
    try:
        for n in sorted(args.sizes):
            config = workdir / f"nachtwacht-{n}.yaml"
            config.write_text(config_yaml(url, n, target_port), encoding="utf-8")
            settings = load_config(config)
            log(f"filling the store up to {n} probes")
            loaded = fill(
                store,
                settings,
                now,
                minute_hours=args.minute_hours,
                raw_hours=args.raw_hours,
                seed=args.seed + n,
            )
            log(f"filled in {loaded['seconds']} s: {loaded}")
            port = _free_port()
            profile = str(Path(args.profile) / f"server-{n}.prof") if args.profile else None
            proc = start_server(config, port, args.engine, profile)
            try:
                log(f"measuring {n} probes")
                result = measure(
                    f"http://127.0.0.1:{port}",
                    token,
                    psutil.Process(proc.pid),
                    n,
                    args.requests,
                    store,
                    args.engine,
                )
            finally:
                stop_process(proc)
            target_ms = TARGETS_MS.get(n)
            run: dict[str, Any] = {"probes": n, "fill": loaded, **result}
            if target_ms is not None:
                run["overview_target_p95_ms"] = target_ms
                run["overview_within_target"] = result["overview"]["p95_ms"] < target_ms
            runs.append(run)
        sizes = table_sizes(store)
    finally:
        if target is not None:
            stop_process(target)
        store.dispose()
    print(
        json.dumps(
            {
                "bench": "dashboard",
                "store": store.dialect,
                "engine": "on" if args.engine else "off",
                "history_days": DAYS,
                "minute_rollup_hours": args.minute_hours,
                "raw_result_hours": args.raw_hours,
                "probe_interval_s": INTERVAL,
                "rows_at_end": sizes,
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                # other work on the machine makes every number here worse: look at this first
                "load_average_1m_at_start": load_at_start,
                "runs": runs,
            },
            indent=2,
        )
    )
    if not args.store:
        shutil.rmtree(workdir)  # the store, and the spool directory the server made beside it


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
