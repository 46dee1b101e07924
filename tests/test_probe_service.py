"""The `service` probe against real processes (and systemctl's real output format)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from pydantic import ValidationError

from nachtwacht.clock import FakeClock
from nachtwacht.probes.context import ProbeContext
from nachtwacht.probes.kinds.service import (
    Config,
    ProbeImpl,
    judge_unit,
    systemd_running,
    unit_process_name,
)
from nachtwacht.probes.results import Status


def make(**keys: Any) -> ProbeImpl:
    return ProbeImpl(Config(name="svc", kind="service", **keys), ProbeContext(clock=FakeClock()))


@pytest.fixture
def sleepers() -> Iterator[str]:
    """Two real `sleep` processes whose argv[0] is a name nothing else on the machine uses."""
    name = f"nw-svc-{uuid.uuid4().hex[:8]}"
    procs = [subprocess.Popen([name, "30"], executable="sleep") for _ in range(2)]
    try:
        yield name
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.fixture
def no_systemd() -> None:
    if systemd_running():
        pytest.skip("systemd is running here; the fallback path is not taken")


async def test_finds_this_tests_own_python_process_by_name() -> None:
    name = psutil.Process().name()
    result = await make(process=name).run()
    assert result.status is Status.OK
    assert result.value is not None and result.value >= 1
    assert f"named {name} running" in result.message


async def test_process_that_is_not_running_is_critical() -> None:
    name = f"nw-absent-{uuid.uuid4().hex[:8]}"
    result = await make(process=name).run()
    assert result.status is Status.CRITICAL
    assert result.value == 0
    assert result.message == f"no process named {name} running"


async def test_matches_argv0_basename_and_counts_every_process(sleepers: str) -> None:
    # The kernel calls these processes "sleep"; only argv[0] carries the name.
    result = await make(process=sleepers, min_count=2).run()
    assert result.status is Status.OK
    assert result.value == 2
    assert result.message == f"2 processes named {sleepers} running"


async def test_fewer_than_min_count_is_critical(sleepers: str) -> None:
    result = await make(process=sleepers, min_count=3).run()
    assert result.status is Status.CRITICAL
    assert result.value == 2
    assert result.message == f"2 processes named {sleepers} running, expected at least 3"


async def test_without_systemd_the_unit_name_is_checked_as_a_process(
    no_systemd: None, sleepers: str
) -> None:
    result = await make(unit=f"{sleepers}.service").run()
    assert result.status is Status.OK
    assert result.value == 2
    assert result.message == (f"systemd not running; checked processes named {sleepers}: 2 running")


async def test_without_systemd_the_process_key_wins_over_the_unit_name(
    no_systemd: None, sleepers: str
) -> None:
    result = await make(unit="nginx.service", process=sleepers).run()
    assert result.status is Status.OK
    assert result.message == (f"systemd not running; checked processes named {sleepers}: 2 running")


async def test_without_systemd_a_missing_unit_process_is_critical(no_systemd: None) -> None:
    name = f"nw-absent-{uuid.uuid4().hex[:8]}"
    result = await make(unit=f"{name}.service", min_count=2).run()
    assert result.status is Status.CRITICAL
    assert result.value == 0
    assert result.message == (
        f"systemd not running; checked processes named {name}: 0 running, expected at least 2"
    )


@pytest.mark.parametrize(
    ("output", "status", "value", "message"),
    [
        (
            "ActiveState=active\nSubState=running\nLoadState=loaded\n",
            Status.OK,
            1.0,
            "nginx.service active (running)",
        ),
        (
            "LoadState=loaded\nActiveState=activating\nSubState=start-pre\n",
            Status.WARNING,
            0.0,
            "nginx.service activating (start-pre)",
        ),
        (
            "ActiveState=reloading\nSubState=reload\nLoadState=loaded\n",
            Status.WARNING,
            0.0,
            "nginx.service reloading (reload)",
        ),
        (
            "ActiveState=failed\nSubState=failed\nLoadState=loaded\n",
            Status.CRITICAL,
            0.0,
            "nginx.service failed (failed)",
        ),
        (
            "ActiveState=inactive\nSubState=dead\nLoadState=masked\n",
            Status.CRITICAL,
            0.0,
            "nginx.service inactive (dead), masked",
        ),
        (
            "ActiveState=inactive\nSubState=dead\nLoadState=not-found\n",
            Status.CRITICAL,
            0.0,
            "unit nginx.service not found",
        ),
        ("", Status.UNKNOWN, None, "systemctl reported no ActiveState for nginx.service"),
    ],
)
def test_systemctl_show_output_is_judged(
    output: str, status: Status, value: float | None, message: str
) -> None:
    result = judge_unit("nginx.service", output)
    assert (result.status, result.value, result.message) == (status, value, message)


@pytest.mark.skipif(not systemd_running(), reason="needs a machine booted with systemd")
async def test_real_systemd_unit_that_does_not_exist_is_critical() -> None:
    name = f"nw-absent-{uuid.uuid4().hex[:8]}.service"
    result = await make(unit=name).run()
    assert result.status is Status.CRITICAL
    assert result.message == f"unit {name} not found"


@pytest.mark.parametrize(
    ("unit", "process"),
    [
        ("nginx.service", "nginx"),
        ("redis-server", "redis-server"),
        ("frappe-worker@2.service", "frappe-worker"),
        ("cron.timer", "cron"),
    ],
)
def test_unit_name_becomes_a_process_name(unit: str, process: str) -> None:
    assert unit_process_name(unit) == process


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        ({}, "give `unit`"),
        ({"unit": "--all"}, "unit"),
        ({"unit": "my unit"}, "unit"),
        ({"process": "/usr/sbin/nginx"}, "process"),
        ({"process": "nginx", "min_count": 0}, "min_count"),
    ],
)
def test_bad_config_is_refused(keys: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        Config(name="svc", kind="service", **keys)
