"""Run the kill -9 tests again and again under CPU load; print JSON with every run's outcome.

The structure issue asks for 20 consecutive green runs of the crash tests under `stress`-style
load: a test that fails once in twenty on a loaded machine will one day block a landing. The
load is busy-looping processes (one per core unless --burners says otherwise), stopped when the
runs end. Not part of CI: it takes about two minutes a run.

    .venv/bin/python bench/kill9_soak.py --runs 20
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRASH_TESTS = [
    "tests/test_nothing_lost_kill9.py",
    "tests/test_nothing_lost_pg.py",
    "tests/test_notify_crash.py",
    "tests/test_page_durable.py",
]


def _burn() -> None:
    while True:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    burners = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(args.burners)]
    for b in burners:
        b.start()
    runs = []
    try:
        for n in range(args.runs):
            started = time.monotonic()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-n",
                    "0",
                    "-p",
                    "no:randomly",
                    *CRASH_TESTS,
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
            runs.append(
                {
                    "run": n + 1,
                    "ok": done.returncode == 0,
                    "seconds": round(time.monotonic() - started, 1),
                    "summary": last,
                }
            )
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
            if done.returncode != 0:
                print(done.stdout[-4000:], file=sys.stderr)
    finally:
        for b in burners:
            b.terminate()
    green = 0
    for r in runs:
        green = green + 1 if r["ok"] else 0
    print(
        json.dumps(
            {
                "runs": len(runs),
                "failed": sum(not r["ok"] for r in runs),
                "consecutive_green_at_end": green,
                "burners": args.burners,
                "cores": os.cpu_count(),
                "seconds_per_run_median": sorted(r["seconds"] for r in runs)[len(runs) // 2]
                if runs
                else None,
            }
        )
    )


if __name__ == "__main__":
    main()
