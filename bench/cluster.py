"""Several `nachtwacht serve` processes on one PostgreSQL: division, cost and takeover.

Starts `--members` real `nachtwacht serve` processes (each with its own spool) on one store,
N HTTP probes at interval I against the local target of bench/target.py (its own process).
Once the members have divided the probes and a warm-up has passed, it measures for
`--duration` seconds, from the store and from each process:

- checks in the window, in total and per probe (a probe checked more than once per interval
  counts as `double_checked`: the division is broken or two members overlap);
- lag p50/p99 (`results.lag_ms`, how late each check started against its due time);
- CPU seconds per 1,000 checks (psutil, every member's CPU over the window, summed) and each
  member's CPU cores and peak RSS.

Then it kills the first member with SIGKILL and measures the takeover: for each probe the
victim owned (recomputed with `ownership.owned_by` from the member rows), the time from the
kill to its first result after it; `takeover_max_s` is the last one.

Prints one JSON object on stdout; progress goes to stderr.

    .venv/bin/python bench/cluster.py --probes 50000 --interval 30 --duration 120 \
        --store postgresql+psycopg://postgres@127.0.0.1/nw_cluster_bench --fresh
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probes import (  # noqa: E402 - the sibling benchmark's helpers
    config_yaml,
    free_port,
    fresh_database,
    log,
    start_target,
    stop_process,
)

from nachtwacht.engine.ownership import owned_by  # noqa: E402
from nachtwacht.store import tables as t  # noqa: E402
from nachtwacht.store.db import Store  # noqa: E402


def start_member(config: Path, log_file: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nachtwacht",
            "serve",
            "-c",
            str(config),
            "--port",
            str(free_port()),
            "--log-level",
            "info",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log_file.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def divided(store: Store, members: int, probes: int) -> bool:
    with contextlib.suppress(Exception), store.connect() as conn:
        rows = conn.execute(
            select(t.members.c.probes_owned).where(t.members.c.dead_at.is_(None))
        ).all()
        owned = [r[0] for r in rows]
        return len(owned) == members and sum(owned) == probes and min(owned) > 0
    return False


def window_stats(store: Store, since: float, until: float) -> dict[str, Any]:
    r = t.results.c
    with store.connect() as conn:
        per_probe = conn.execute(
            select(r.probe_id, func.count()).where(r.ts >= since, r.ts < until).group_by(r.probe_id)
        ).all()
        p50, p99, lag_max = conn.execute(
            text(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms),"
                " percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms), max(lag_ms)"
                " FROM results WHERE ts >= :a AND ts < :b"
            ),
            {"a": since, "b": until},
        ).one()
    return {
        "counts": {pid: n for pid, n in per_probe},
        "lag_p50_ms": None if p50 is None else round(p50, 1),
        "lag_p99_ms": None if p99 is None else round(p99, 1),
        "lag_max_ms": None if lag_max is None else round(lag_max, 1),
    }


def first_after(store: Store, since: float, ids: set[int], limit: float) -> dict[int, float]:
    """probe id → its first result's time after `since`, polled until all have one."""
    r = t.results.c
    found: dict[int, float] = {}
    deadline = time.time() + limit
    while time.time() < deadline and len(found) < len(ids):
        time.sleep(1.0)
        with contextlib.suppress(Exception), store.connect() as conn:
            rows = conn.execute(
                select(r.probe_id, func.min(r.ts)).where(r.ts >= since).group_by(r.probe_id)
            ).all()
            found = {pid: ts for pid, ts in rows if pid in ids}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", required=True, help="a PostgreSQL (or MariaDB) URL")
    parser.add_argument("--fresh", action="store_true", help="drop and create the database")
    parser.add_argument("--probes", type=int, default=50_000)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=None, help="default: 1.5 intervals")
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--spread", type=float, default=25.0, help="engine.startup_spread")
    parser.add_argument("--takeover-limit", type=float, default=120.0)
    args = parser.parse_args()
    if args.fresh:
        fresh_database(args.store)
    Store(args.store).migrate()  # once, before the members start
    target, port = start_target()
    tmp = tempfile.TemporaryDirectory(prefix="nachtwacht-cluster-")
    members: list[subprocess.Popen[bytes]] = []
    store = Store(args.store)
    out: dict[str, Any] = {
        "probes": args.probes,
        "interval": args.interval,
        "members": args.members,
        "cores": psutil.cpu_count(),
    }
    try:
        base = config_yaml(args.store, port, args.probes, args.interval, args.spread)
        for n in range(args.members):
            home = Path(tmp.name) / f"m{n}"
            home.mkdir()
            config = home / "nachtwacht.yaml"
            config.write_text(f"spool:\n  dir: {home / 'spool'}\n" + base, encoding="utf-8")
            members.append(start_member(config, home / "serve.log"))
        log(f"{args.members} members started; target on {port}; waiting for the division")
        started = time.perf_counter()
        while not divided(store, args.members, args.probes):
            if any(p.poll() is not None for p in members):
                raise SystemExit("a member exited at start; see its serve.log")
            time.sleep(1.0)
        out["divided_after_s"] = round(time.perf_counter() - started, 1)
        warmup = args.warmup if args.warmup is not None else 1.5 * args.interval
        log(f"divided after {out['divided_after_s']} s; warming up {warmup:g} s")
        time.sleep(warmup)

        procs = [psutil.Process(p.pid) for p in members]
        cpu0 = [sum(p.cpu_times()[:2]) for p in procs]
        rss_max = [p.memory_info().rss for p in procs]
        ts0 = time.time()
        log(f"measuring {args.duration:g} s")
        while time.time() < ts0 + args.duration:
            time.sleep(1.0)
            rss_max = [max(m, p.memory_info().rss) for m, p in zip(rss_max, procs, strict=True)]
        ts1 = time.time()
        cpu = [sum(p.cpu_times()[:2]) - c for p, c in zip(procs, cpu0, strict=True)]
        time.sleep(3.0)  # the writers flush every second
        stats = window_stats(store, ts0, ts1)
        counts = stats.pop("counts")
        checks = sum(counts.values())
        elapsed = ts1 - ts0
        per_interval = elapsed / args.interval
        out.update(
            {
                "duration": round(elapsed, 1),
                "checks": checks,
                "checks_per_sec": round(checks / elapsed, 1),
                "expected_per_sec": round(args.probes / args.interval, 1),
                "probes_checked": len(counts),
                # more than once per interval plus one: two members checking it
                "double_checked": sum(1 for n in counts.values() if n > per_interval + 1.01),
                "checks_per_probe": dict(sorted(Counter(counts.values()).items())),
                **stats,
                "cpu_seconds_per_1000_checks": round(sum(cpu) / checks * 1000, 3)
                if checks
                else None,
                "member_cpu_cores": [round(c / elapsed, 3) for c in cpu],
                "member_rss_max_mb": [round(m / 2**20, 1) for m in rss_max],
            }
        )
        log(json.dumps(out))

        with store.connect() as conn:
            ids = conn.execute(select(t.members.c.id)).scalars().all()
            probe_ids = conn.execute(select(t.probes.c.id)).scalars().all()
        victim = members[0]
        victim_id = next(i for i in ids if i.endswith(f":{victim.pid}"))
        theirs = owned_by(victim_id, ids, probe_ids)
        log(f"kill -9 {victim_id} ({len(theirs)} probes)")
        killed_at = time.time()
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        firsts = first_after(store, killed_at, theirs, args.takeover_limit)
        delays = sorted(ts - killed_at for ts in firsts.values())
        out.update(
            {
                "victim_probes": len(theirs),
                "victim_probes_checked_after_kill": len(firsts),
                "takeover_p50_s": round(delays[len(delays) // 2], 1) if delays else None,
                "takeover_max_s": round(delays[-1], 1) if delays else None,
            }
        )
        with store.connect() as conn:
            out["silent_alerts"] = conn.execute(
                select(func.count()).where(t.alerts.c.fingerprint.like("member:%"))
            ).scalar()
    finally:
        for proc in members:
            stop_process(proc, 20)
        for log_file in sorted(Path(tmp.name).glob("m*/serve.log")):
            for line in log_file.read_text(errors="replace").splitlines():
                if "nachtwacht.engine" in line:
                    log(f"{log_file.parent.name}: {line}")
        stop_process(target, 5)
        store.dispose()
        tmp.cleanup()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
