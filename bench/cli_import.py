"""Import time of `nachtwacht --help` and `nachtwacht status`, per `python -X importtime`.

Each command runs `--runs` times in a new interpreter (after one warm-up run that creates the
store and the bytecode caches); the total is the sum of the top-level imports' cumulative
times, so it counts what the command loads while it runs, not only `import
nachtwacht.cli.main`. Prints one JSON object: per command the best and median total in ms,
the best and median CPU time of the whole process (start, imports and the command's work) and
the biggest top-level imports of the best run. The best run is the one to compare: on a
shared machine the others carry other processes' load.

    python bench/cli_import.py --runs 7
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = (
    "import sys\n"
    "from nachtwacht.cli.main import main\n"
    "sys.argv = ['nachtwacht', *{args!r}]\n"
    "try:\n"
    "    main()\n"
    "except SystemExit:\n"
    "    pass\n"
)


def measure(
    args: list[str], cwd: Path, env: dict[str, str]
) -> tuple[int, list[tuple[int, str]], float]:
    """(total import µs, top-level imports, the process's CPU seconds: start, imports, work)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", RUN.format(args=args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    top: list[tuple[int, str]] = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        _, cumulative, name = line.split("|")
        # one space before a top-level name; nested imports are indented further
        if cumulative.strip().isdigit() and name.startswith(" ") and not name.startswith("  "):
            top.append((int(cumulative), name.strip()))
    return sum(t for t, _ in top), sorted(top, reverse=True), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--top", type=int, default=8, help="imports shown per command")
    parser.add_argument(
        "--src", type=Path, default=ROOT / "src", help="another checkout's src/, to compare"
    )
    opts = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(opts.src), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "80"
    out: dict[str, object] = {"runs": opts.runs, "python": sys.version.split()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run(
            [sys.executable, "-m", "nachtwacht", "init", "--output", "nachtwacht.yaml"],
            cwd=work,
            env=env,
            capture_output=True,
            check=True,
            timeout=300,
        )
        for label, args in (
            ("help", ["--help"]),
            ("status", ["status", "--config", "nachtwacht.yaml"]),
        ):
            measure(args, work, env)  # warm-up: bytecode, and status creates the store
            runs = [measure(args, work, env) for _ in range(max(1, opts.runs))]
            totals = [total for total, _, _ in runs]
            cpu = [c for _, _, c in runs]
            best = min(runs, key=lambda r: r[0])
            out[label] = {
                "best_ms": round(best[0] / 1000, 1),
                "median_ms": round(statistics.median(totals) / 1000, 1),
                # CPU time varies less with other processes' load than the wall-clock above
                "cpu_best_ms": round(min(cpu) * 1000, 1),
                "cpu_median_ms": round(statistics.median(cpu) * 1000, 1),
                "top": {name: round(us / 1000, 1) for us, name in best[1][: opts.top]},
            }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
