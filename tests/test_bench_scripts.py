"""Every bench/ script still runs, on tiny sizes: a refactor that breaks one (a renamed module or
attribute) must fail here, not the next time someone measures. The numbers are not checked:
benchmarks never gate CI (docs/performance.md has them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

RUNS = {
    "alert_latency": ["--runs", "3", "--warmup", "1"],
    "probes": ["--probes", "20", "--interval", "1", "--duration", "2", "--no-process-restart"],
    "dashboard": ["--sizes", "20", "--requests", "2", "--minute-hours", "1", "--raw-hours", "0.1"],
    "ingest": [
        "--rates",
        "50",
        "--seconds",
        "1",
        "--issues",
        "3",
        "--inflight",
        "8",
        "--connections",
        "4",
        "--pause",
        "0",
    ],
    "kill9_soak": ["--help"],
    "cli_import": ["--runs", "1", "--top", "3"],
    "security": ["--lines", "2000", "--runs", "1", "--addresses", "1000"],
    "metrics": ["--sizes", "20", "--scrapes", "1", "--gap", "0"],
    # starts real serve processes on PostgreSQL for minutes: imports and arguments only
    "cluster": ["--help"],
}


def test_every_bench_script_is_run_here() -> None:
    # target.py is no benchmark: the others start it as a probe target
    scripts = {p.stem for p in (ROOT / "bench").glob("*.py")} - {"target"}
    assert scripts == set(RUNS)


@pytest.mark.parametrize("script", sorted(RUNS))
def test_bench_script_runs_and_prints_json(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{script}.py"), *RUNS[script]],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if RUNS[script] == ["--help"]:
        assert "usage:" in done.stdout
        return
    # one JSON document, or one JSON object per line (ingest prints one per rate and a summary)
    text = done.stdout.strip()
    try:
        json.loads(text)
    except json.JSONDecodeError:
        for line in text.splitlines():
            json.loads(line)
