"""The `host` probe against this machine's real disk, memory, swap, CPU and load."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from nachtwacht.clock import FakeClock
from nachtwacht.probes.context import ProbeContext
from nachtwacht.probes.kinds.host import Config, ProbeImpl, busy_percent
from nachtwacht.probes.results import Status


def make(**keys: Any) -> ProbeImpl:
    return ProbeImpl(Config(name="host", kind="host", **keys), ProbeContext(clock=FakeClock()))


async def test_disk_usage_of_root_is_a_percentage_with_sizes() -> None:
    probe = make(metric="disk")
    result = await probe.run()
    assert result.value is not None and 0 < result.value < 100
    assert result.status is probe.config.judge(result.value)
    assert result.message.startswith(f"disk / {result.value:.1f}% used (")
    assert result.message.split("(")[1].split(")")[0].endswith(" GB")


@pytest.mark.parametrize(
    ("keys", "status", "suffix"),
    [
        ({"critical": 0}, Status.CRITICAL, " (> 0)"),
        ({"warn": 0, "critical": 100}, Status.WARNING, " (> 0)"),
        ({"warn": 100, "critical": 100}, Status.OK, ")"),
        ({"critical": 100, "op": "<"}, Status.CRITICAL, " (< 100)"),
    ],
)
async def test_disk_thresholds_flip_the_status(
    keys: dict[str, Any], status: Status, suffix: str
) -> None:
    result = await make(metric="disk", mount="/", **keys).run()
    assert result.status is status
    assert result.message.endswith(suffix)


async def test_mount_that_does_not_exist_is_critical(tmp_path: Path) -> None:
    missing = tmp_path / "backup"
    result = await make(metric="disk", mount=str(missing)).run()
    assert result.status is Status.CRITICAL
    assert result.message == f"mount {missing} does not exist"


async def test_directory_with_nothing_mounted_is_critical(tmp_path: Path) -> None:
    # An unmounted backup disk leaves an empty directory; its usage would be the root's.
    result = await make(metric="disk", mount=str(tmp_path)).run()
    assert result.status is Status.CRITICAL
    assert result.message == f"{tmp_path} is not a mount point (nothing mounted there)"


@pytest.mark.parametrize(
    ("metric", "prefix", "upper"),
    [
        ("memory", "memory ", 100),
        ("swap", "swap ", 100),
        ("cpu", "cpu ", 100),
        ("load", "load ", None),
    ],
)
async def test_metrics_report_numbers(metric: str, prefix: str, upper: float | None) -> None:
    probe = make(metric=metric)
    result = await probe.run()
    assert isinstance(result.value, float)
    assert result.value >= 0
    if upper is not None:
        assert result.value <= upper
    assert result.status is probe.config.judge(result.value)
    assert result.message.startswith(prefix)
    assert result.latency_ms is not None


async def test_thresholds_apply_to_memory_and_load() -> None:
    memory = await make(metric="memory", critical=0).run()
    assert memory.status is Status.CRITICAL
    load = await make(metric="load", warn=-1, critical=1000).run()
    assert load.status is Status.WARNING
    assert "per core" in load.message and "cores)" in load.message


async def test_cpu_first_check_samples_then_measures_since_last_check() -> None:
    probe = make(metric="cpu")
    first = await probe.run()
    assert first.message.startswith("cpu ") and "busy over 0.2s" in first.message
    assert first.latency_ms is not None and first.latency_ms >= 150
    # Burn CPU for a few kernel ticks so the interval between checks is certainly busy.
    deadline = time.perf_counter() + 0.15
    while time.perf_counter() < deadline:
        pass
    second = await probe.run()
    assert "busy since the last check" in second.message
    assert second.value is not None and 0 < second.value <= 100
    assert second.latency_ms is not None and second.latency_ms < 150


def test_busy_percent_counts_iowait_as_idle() -> None:
    from psutil._pslinux import scputimes

    zero = scputimes(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    # user, nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice
    later = scputimes(30, 0, 10, 40, 20, 0, 0, 0, 5, 0)
    assert busy_percent(zero, later) == pytest.approx(40.0)
    assert busy_percent(later, later) is None


@pytest.mark.parametrize(
    ("metric", "warn", "critical"),
    [
        ("disk", 80, 90),
        ("memory", 85, 95),
        ("swap", 50, 80),
        ("cpu", 80, 95),
        ("load", 1.5, 3.0),
    ],
)
def test_default_thresholds_are_filled(metric: str, warn: float, critical: float) -> None:
    config = Config(name="host", kind="host", metric=metric)
    assert (config.warn, config.critical, config.op) == (warn, critical, ">")


def test_given_threshold_replaces_both_defaults() -> None:
    config = Config(name="host", kind="host", metric="disk", warn=70)
    assert (config.warn, config.critical) == (70, None)


def test_lower_is_worse_gets_no_defaults() -> None:
    config = Config(name="host", kind="host", metric="memory", op="<")
    assert (config.warn, config.critical) == (None, None)


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        ({"metric": "memory", "mount": "/"}, "mount` applies only to metric: disk"),
        ({"metric": "inodes"}, "metric"),
        ({}, "metric"),
    ],
)
def test_bad_config_is_refused(keys: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        Config(name="host", kind="host", **keys)
