"""`host`: disk, memory, swap, CPU or load of the machine Nachtwacht runs on.

Decisions:

- Values are percentages used (disk, memory, swap), percent busy (cpu) or the 1-minute load
  average per logical core (load). Without `warn`/`critical` the defaults below apply; giving
  either one replaces both defaults, so `warn: 70` alone means "warn at 70, never critical".
- `mount` must be a mount point, not just a path: a backup disk that failed to mount leaves an
  empty directory on the root filesystem, and reporting the root filesystem's usage for it
  would hide exactly the failure the probe exists for.
- cpu is busy time between two `psutil.cpu_times()` samples (psutil's own formula: iowait counts
  as idle, guest time is already in user time). Each probe keeps its previous sample, so a
  check reports the average since the last check; the first check samples over 0.2 s.
- A machine without swap reports 0% used.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Literal

import psutil
from pydantic import model_validator

from nachtwacht.probes.base import Probe, ThresholdConfig
from nachtwacht.probes.results import CheckResult

Metric = Literal["disk", "memory", "swap", "cpu", "load"]
DEFAULT_THRESHOLDS: dict[str, tuple[float, float]] = {
    "disk": (80.0, 90.0),
    "memory": (85.0, 95.0),
    "swap": (50.0, 80.0),
    "cpu": (80.0, 95.0),
    "load": (1.5, 3.0),
}
FIRST_CPU_SAMPLE_SECONDS = 0.2
GB = 1e9


class Config(ThresholdConfig):
    kind: Literal["host"]
    metric: Metric
    mount: str = "/"

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        metric = data.get("metric")
        if "mount" in data and metric != "disk":
            raise ValueError("`mount` applies only to metric: disk")
        # Defaults mean "higher is worse"; with op "<" they would invert, so leave them out.
        higher_is_worse = data.get("op", ">") in (">", ">=")
        if (
            data.get("warn") is None
            and data.get("critical") is None
            and higher_is_worse
            and metric in DEFAULT_THRESHOLDS
        ):
            warn, critical = DEFAULT_THRESHOLDS[metric]
            data = {**data, "warn": warn, "critical": critical}
        return data


def _busy_and_total(times: Any) -> tuple[float, float]:
    total = sum(times)
    # On Linux guest time is already counted in user/nice; iowait is idle time (as psutil/htop).
    total -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    busy = total - times.idle - getattr(times, "iowait", 0.0)
    return busy, total


def busy_percent(before: Any, after: Any) -> float | None:
    """Percent busy between two `cpu_times()` samples; None when no time passed between them."""
    busy0, total0 = _busy_and_total(before)
    busy1, total1 = _busy_and_total(after)
    elapsed = total1 - total0
    if elapsed <= 0:
        return None
    return min(100.0, max(0.0, (busy1 - busy0) / elapsed * 100))


def _sample_cpu(seconds: float) -> tuple[Any, Any]:
    before = psutil.cpu_times()
    time.sleep(seconds)  # runs in a worker thread, never on the event loop
    return before, psutil.cpu_times()


class ProbeImpl(Probe):
    config: Config

    def __init__(self, config: Config, ctx) -> None:
        super().__init__(config, ctx)
        self._cpu_prev: Any = None

    async def check(self) -> CheckResult:
        metric = self.config.metric
        if metric == "disk":
            return await self._disk()
        if metric == "memory":
            return self._memory()
        if metric == "swap":
            return self._swap()
        if metric == "cpu":
            return await self._cpu()
        return self._load()

    def _result(self, value: float, text: str) -> CheckResult:
        status = self.config.judge(value)
        return CheckResult(status, f"{text}{self.config.describe(status)}", value)

    async def _disk(self) -> CheckResult:
        mount = self.config.mount
        try:
            exists, is_mount = await asyncio.to_thread(_mount_state, mount)
            if not exists:
                return CheckResult.critical(f"mount {mount} does not exist")
            if not is_mount:
                return CheckResult.critical(f"{mount} is not a mount point (nothing mounted there)")
            usage = await asyncio.to_thread(psutil.disk_usage, mount)
        except OSError as exc:
            return CheckResult.critical(f"cannot read disk usage of {mount}: {exc.strerror or exc}")
        return self._result(
            usage.percent,
            f"disk {mount} {usage.percent:.1f}% used "
            f"({usage.used / GB:.1f} of {usage.total / GB:.1f} GB)",
        )

    # Memory, swap and load read /proc files the kernel fills from memory: microseconds, no
    # disk I/O, so a thread hop would cost more than it saves.
    def _memory(self) -> CheckResult:
        mem = psutil.virtual_memory()
        return self._result(
            mem.percent,
            f"memory {mem.percent:.1f}% used ({(mem.total - mem.available) / GB:.1f} of "
            f"{mem.total / GB:.1f} GB, {mem.available / GB:.1f} GB available)",
        )

    def _swap(self) -> CheckResult:
        swap = psutil.swap_memory()
        if swap.total == 0:
            return self._result(0.0, "swap 0% used (no swap configured)")
        return self._result(
            swap.percent,
            f"swap {swap.percent:.1f}% used ({swap.used / GB:.1f} of {swap.total / GB:.1f} GB)",
        )

    async def _cpu(self) -> CheckResult:
        busy = None
        if self._cpu_prev is not None:
            now = psutil.cpu_times()
            busy = busy_percent(self._cpu_prev, now)
            self._cpu_prev = now
            window = "since the last check"
        if busy is None:
            # First check (cpu_percent(interval=None) would return a meaningless 0), or two
            # checks within one kernel tick: measure over a short window instead.
            before, after = await asyncio.to_thread(_sample_cpu, FIRST_CPU_SAMPLE_SECONDS)
            busy = busy_percent(before, after) or 0.0
            self._cpu_prev = after
            window = f"over {FIRST_CPU_SAMPLE_SECONDS:g}s"
        return self._result(busy, f"cpu {busy:.1f}% busy {window}")

    def _load(self) -> CheckResult:
        load1, load5, load15 = os.getloadavg()
        cores = psutil.cpu_count(logical=True) or os.cpu_count() or 1
        per_core = load1 / cores
        return self._result(
            per_core,
            f"load {per_core:.2f} per core (1m {load1:.2f}, 5m {load5:.2f}, "
            f"15m {load15:.2f} on {cores} cores)",
        )


def _mount_state(path: str) -> tuple[bool, bool]:
    """(exists, is a mount point): both stat the path, which can hang on a dead network mount."""
    return os.path.exists(path), os.path.ismount(path)
