"""/metrics benchmark: one Prometheus scrape at 1,000 and 10,000 probes.

Fills a store (SQLite in a temp dir unless `--store` says otherwise; a server database must be
empty) with N tcp probes and a `probe_state` row each (most ok, a few warning, critical or
pending: bench/dashboard.py's bad day), no history: /metrics reads the probes' state from the
scheduler, which loads it at start. Then it serves the real app (`create_app` under uvicorn
with uvloop, engine off, start-up objects frozen out of the collector as `serve` does: the
child of bench/dashboard.py; `--engine` runs the probes too, against bench/target.py) and
scrapes it with httpx and a `metrics`-role API token:

- `cold`: the first scrape after the start (no `Accept-Encoding`);
- `render_gzip`: a scrape `--gap` seconds after the one before (longer than /metrics keeps a
  rendered scrape, so the per-probe series are rendered again) with `Accept-Encoding: gzip`,
  as Prometheus sends it: what every scrape of a Prometheus costs;
- `cached_gzip`: the same right after it, as a second Prometheus replica would send it;
- `render` and `cached`: the same two without gzip (`Accept-Encoding: identity`).

Each gets the median over `--scrapes` rounds of wall seconds (httpx included), server CPU
seconds (psutil, every thread) and bytes on the wire; `body_bytes` is the uncompressed
exposition. Prints one JSON object on stdout; progress goes to stderr.

    .venv/bin/python bench/metrics.py
    .venv/bin/python bench/metrics.py --sizes 10000 --scrapes 3 --engine
    .venv/bin/python bench/metrics.py --profile /tmp/metrics-prof   # cProfile of the server
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import bindparam, update

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import dashboard  # noqa: E402  (bench/ is not a package: its sibling, by path)

from nachtwacht.auth.tokens import create_token  # noqa: E402
from nachtwacht.config.loader import load_config  # noqa: E402
from nachtwacht.probes import service as probes  # noqa: E402
from nachtwacht.store import tables as t  # noqa: E402
from nachtwacht.store.db import Store  # noqa: E402

log = dashboard.log


def fill(store: Store, config: Path, now: float, seed: int) -> int:
    """Add the probes of `config` the store lacks, with a state each; return how many."""
    settings = load_config(config)
    rng = random.Random(seed)
    with store.begin() as conn:
        known = set(conn.execute(t.probes.select().with_only_columns(t.probes.c.id)).scalars())
        ids = probes.sync_probes(conn, settings.probes, now)
        new = sorted(pid for pid in ids.values() if pid not in known)
        states = dashboard._states(new, now, rng)
        if states:
            conn.execute(
                update(t.probe_state)
                .where(t.probe_state.c.probe_id == bindparam("pid"))
                .values(**{c: bindparam(f"s_{c}") for c in dashboard.STATE_COLUMNS}),
                list(states.values()),
            )
    return len(new)


def scrape(
    client: httpx.Client, server: psutil.Process, gzip: bool = False
) -> dict[str, float | int]:
    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    cpu0 = sum(server.cpu_times()[:2])
    start = time.perf_counter()
    # stream: the bytes on the wire, before httpx would decompress them
    with client.stream("GET", "/metrics", headers=headers) as response:
        raw = b"".join(response.iter_raw())
    took = time.perf_counter() - start
    cpu = sum(server.cpu_times()[:2]) - cpu0
    if response.status_code != 200:
        raise SystemExit(f"GET /metrics: {response.status_code} {raw[:300]!r}")
    encoding = response.headers.get("content-encoding", "identity")
    if gzip and encoding != "gzip":
        log("note: /metrics did not gzip for a scraper that accepts it")
    return {
        "seconds": took,
        "server_cpu_seconds": cpu,
        "bytes": len(raw),
        "gzip": encoding == "gzip",
    }


def median(rounds: list[dict[str, Any]], key: str) -> dict[str, Any]:
    values = [r[key] for r in rounds]
    return {
        "seconds": round(statistics.median(v["seconds"] for v in values), 3),
        "max_seconds": round(max(v["seconds"] for v in values), 3),
        "server_cpu_seconds": round(statistics.median(v["server_cpu_seconds"] for v in values), 3),
        "bytes": int(statistics.median(v["bytes"] for v in values)),
        "gzip": all(v["gzip"] for v in values),
    }


def measure(base: str, token: str, server: psutil.Process, scrapes: int, gap: float) -> dict:
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as client:
        cold = scrape(client, server)
        body = client.get("/metrics", headers={"Accept-Encoding": "identity"}).text
        rounds = []
        for _ in range(scrapes):
            one: dict[str, Any] = {}
            time.sleep(gap)
            one["render_gzip"] = scrape(client, server, gzip=True)
            one["cached_gzip"] = scrape(client, server, gzip=True)
            time.sleep(gap)
            one["render"] = scrape(client, server)
            one["cached"] = scrape(client, server)
            rounds.append(one)
    lines = body.count("\n")
    return {
        "cold": {k: round(v, 3) if isinstance(v, float) else v for k, v in cold.items()},
        **{key: median(rounds, key) for key in ("render_gzip", "cached_gzip", "render", "cached")},
        "body_bytes": len(body.encode()),
        "lines": lines,
        "sample_lines": sum(1 for line in body.splitlines() if line and line[0] != "#"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--scrapes", type=int, default=5, help="rounds of 4 scrapes per size")
    parser.add_argument(
        "--gap", type=float, default=6.0, help="seconds between rounds (> the scrape cache's 5 s)"
    )
    parser.add_argument(
        "--store", help="store URL (an empty database); default SQLite in a tmp dir"
    )
    parser.add_argument(
        "--engine",
        action="store_true",
        help="run the probe engine too (tcp probes every 60 s against bench/target.py)",
    )
    parser.add_argument("--profile", help="directory for a cProfile of the server per size")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    load_at_start = round(os.getloadavg()[0], 2)
    workdir = Path(tempfile.mkdtemp(prefix="nw-metrics-bench-"))
    url = args.store or f"sqlite:///{workdir / 'nachtwacht.db'}"
    store = Store(url)
    store.migrate()
    dashboard.require_empty(store)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    target, target_port = dashboard.start_target() if args.engine else (None, 9)
    now = time.time()
    with store.begin() as conn:
        token = create_token(conn, "metrics-bench", "metrics", now, actor="bench")["token"]
    runs = []
    try:
        for n in sorted(args.sizes):
            config = workdir / f"nachtwacht-{n}.yaml"
            config.write_text(dashboard.config_yaml(url, n, target_port), encoding="utf-8")
            log(f"filling the store up to {n} probes")
            added = fill(store, config, now, args.seed + n)
            port = dashboard._free_port()
            profile = str(Path(args.profile) / f"server-{n}.prof") if args.profile else None
            proc = dashboard.start_server(config, port, args.engine, profile)
            try:
                if args.engine:
                    # every probe's first check lands within its 60 s interval
                    log(f"engine on: waiting {dashboard.INTERVAL} s for the first checks")
                    time.sleep(dashboard.INTERVAL)
                log(f"scraping {n} probes")
                result = measure(
                    f"http://127.0.0.1:{port}",
                    token,
                    psutil.Process(proc.pid),
                    args.scrapes,
                    args.gap,
                )
            finally:
                dashboard.stop_process(proc)
            runs.append({"probes": n, "probes_added": added, **result})
    finally:
        if target is not None:
            dashboard.stop_process(target)
        store.dispose()
    print(
        json.dumps(
            {
                "bench": "metrics",
                "store": store.dialect,
                "engine": "on" if args.engine else "off",
                "scrapes": args.scrapes,
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
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
