"""The security detectors' throughput and memory (issue 17), in one process.

Throughput: `--lines` real-looking nginx combined lines (normal traffic from a pool of
addresses, with a scanner walking probe paths and 404s and a brute force on Frappe's login
endpoint that ends in a success mixed in) through `CombinedParser` and `Detector` (which also
counts the daily tallies), with a sweep and the tallies taken every 10,000 lines; the lines
are made before the clock starts. No store. The best of `--runs`.

Memory: the RSS growth (from /proc/self/statm) of a detector fed `--addresses` distinct
client addresses, each with a 404, a 401/403, a 429 and a failed login: the state a flood of
distinct addresses leaves inside one window (before any sweep could forget it).

Watch: the same lines appended to a log file and read by `security.watch.Watch` (the tailer,
parser, detector, and each poll's findings, tallies and position committed to a SQLite store
in a temporary directory), polling until the file is read: the whole path a line takes.

Prints one JSON object.

    PYTHONPATH=src python bench/security.py --lines 200000 --addresses 100000
"""

from __future__ import annotations

import argparse
import calendar
import gc
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from nachtwacht.clock import FakeClock
from nachtwacht.security.detectors import Detector
from nachtwacht.security.models import AccessEvent, LoginEvent
from nachtwacht.security.parsers import CombinedParser

T0 = float(calendar.timegm((2026, 12, 8, 3, 0, 0, 0, 0, 0)))
AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
)
PAGES = (
    "/app/sales-order",
    "/api/method/frappe.desk.form.load.getdoc?doctype=Sales+Order&name=SO-0001",
    "/assets/frappe/dist/js/desk.bundle.js",
    "/api/resource/Item?limit_page_length=20",
    "/app/home",
    "/files/logo.png",
    "/api/method/frappe.realtime.get_user_info",
)
PROBES = ("/.env", "/.git/config", "/wp-login.php", "/phpmyadmin/", "/xmlrpc.php")


def stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")


def line(ts: float, addr: str, method: str, path: str, status: int, agent: str) -> str:
    return f'{addr} - - [{stamp(ts)}] "{method} {path} HTTP/1.1" {status} 5120 "-" "{agent}"'


def traffic(count: int, seed: int = 17) -> list[str]:
    """`count` lines at about 200 requests a second; 1 in 40 a scanner's, 1 in 90 a login."""
    rng = random.Random(seed)
    pool = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(2000)]
    lines = []
    for i in range(count):
        ts = T0 + i * 0.005
        if i % 40 == 7:
            path = rng.choice(PROBES) if i % 80 == 7 else f"/old/{i}.php"
            lines.append(line(ts, "45.155.205.9", "GET", path, 404, "zgrab/0.x"))
        elif i % 90 == 11:
            status = 200 if i % 900 == 11 else 401
            lines.append(line(ts, "203.0.113.66", "POST", "/api/method/login", status, "python"))
        else:
            status = rng.choices((200, 304, 404, 403), (90, 7, 2, 1))[0]
            lines.append(
                line(ts, rng.choice(pool), "GET", rng.choice(PAGES), status, rng.choice(AGENTS))
            )
    return lines


def throughput(lines: list[str]) -> dict[str, Any]:
    clock = FakeClock(T0)
    parser = CombinedParser()
    detector = Detector(clock)
    found: Counter[str] = Counter()
    tallied = 0
    start = time.perf_counter()
    for n, text in enumerate(lines, 1):
        event = parser.parse(text)
        if event is None:
            continue
        for finding in detector.feed(event):
            found[finding.rule] += 1
        if n % 10_000 == 0:
            clock.set(event.ts)
            detector.sweep()
            tallied += len(detector.tally.take())  # the watch takes them once a poll
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 3),
        "lines_per_s": round(len(lines) / seconds),
        "malformed": parser.malformed,
        "findings": dict(sorted(found.items())),
        "tally_rows": tallied + len(detector.tally.take()),
    }


def watch(lines: list[str]) -> dict[str, Any]:
    from nachtwacht.config.loader import parse_config
    from nachtwacht.security.models import Source
    from nachtwacht.security.watch import Watch
    from nachtwacht.store.db import Store

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/nachtwacht.db"
        store = Store(url)
        store.migrate()
        log = os.path.join(tmp, "access.log")
        with open(log, "w") as f:
            f.write("\n".join(lines) + "\n")
        settings = parse_config(f"store:\n  url: {url}\nsite: bench\n", "bench.yaml")
        clock = FakeClock(T0 + len(lines) * 0.005)
        source = Source(name="web", kind="nginx", path=log, from_start=True)
        w = Watch(store, settings, clock, [source])
        polls = tallied = 0
        start = time.perf_counter()
        while True:
            polled = w.poll()
            polls += 1
            tallied += polled.tallied
            if not polled.behind:
                break
        seconds = time.perf_counter() - start
        w.close()
        store.dispose()
    return {
        "seconds": round(seconds, 3),
        "lines_per_s": round(len(lines) / seconds),
        "polls": polls,
        "tally_rows_written": tallied,
    }


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory(addresses: int) -> dict[str, object]:
    events: list[AccessEvent | LoginEvent] = []
    for i in range(addresses):
        addr = (
            f"2001:db8:{i // 65536:x}:{i % 65536:x}::1"
            if i % 4 == 0
            else (f"100.{64 + i // 65536}.{i // 256 % 256}.{i % 256}")
        )
        ts = T0 + i * 0.01
        events.append(AccessEvent(ts, addr, "GET", "/nope", 404))
        events.append(AccessEvent(ts, addr, "GET", "/app", 403))
        events.append(AccessEvent(ts, addr, "GET", "/api", 429))
        events.append(LoginEvent(ts, addr, f"user{i % 50}", False))
    gc.collect()
    detector = Detector(FakeClock(T0))
    before = rss()
    for event in events:
        detector.feed(event)
    gc.collect()
    grown = rss() - before
    return {
        "addresses": addresses,
        "keys": detector.keys(),
        "rss_delta_mb": round(grown / 2**20, 1),
        "bytes_per_address": round(grown / addresses),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--addresses", type=int, default=100_000)
    args = ap.parse_args()
    lines = traffic(args.lines)
    runs = [throughput(lines) for _ in range(args.runs)]
    best = max(runs, key=lambda r: int(r["lines_per_s"]))
    print(
        json.dumps(
            {
                "lines": args.lines,
                "best": best,
                "lines_per_s_all": [r["lines_per_s"] for r in runs],
                "watch": watch(lines),
                "memory": memory(args.addresses),
                "python": sys.version.split()[0],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
