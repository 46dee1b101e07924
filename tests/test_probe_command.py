"""The `command` probe against real subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from pydantic import ValidationError

from nachtwacht.clock import FakeClock
from nachtwacht.probes.kinds.command import Config, ProbeImpl, first_number
from nachtwacht.probes.results import Status


def make(command: str | list[str], **keys: Any) -> ProbeImpl:
    config = Config(name="cmd", kind="command", command=command, **keys)
    return ProbeImpl(config, _ctx())


def _ctx():
    from nachtwacht.probes.context import ProbeContext

    return ProbeContext(clock=FakeClock())


def gone(pid: int, within: float = 3.0) -> bool:
    """Dead (or a zombie nobody reaps: PID 1 in a container may not) within a few seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def read_pids(*files: Path) -> list[int]:
    deadline = time.monotonic() + 3
    while not all(f.exists() and f.read_text().strip() for f in files):
        assert time.monotonic() < deadline, "the command never wrote its pids"
        time.sleep(0.01)
    return [int(f.read_text()) for f in files]


def kill_leftovers(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("code", "status"),
    [(0, Status.OK), (1, Status.WARNING), (2, Status.CRITICAL), (3, Status.UNKNOWN)],
)
async def test_exit_code_maps_to_status_nagios_style(code: int, status: Status) -> None:
    probe = make(["sh", "-c", f"echo 'service says {code}'; echo second line; exit {code}"])
    result = await probe.run()
    assert result.status is status
    assert result.message == f"service says {code}"
    assert result.value == code
    assert result.latency_ms is not None


async def test_string_command_is_split_like_a_shell_without_running_one() -> None:
    # With a shell `$HOME` would expand; shlex only splits, so it arrives literally.
    result = await make("""sh -c 'echo "$0"; exit 1' '$HOME'""").run()
    assert result.status is Status.WARNING
    assert result.message == "$HOME"


async def test_message_falls_back_to_stderr_and_is_trimmed() -> None:
    result = await make(["sh", "-c", "echo; printf 'x%.0s' $(seq 300) >&2; exit 2"]).run()
    assert result.status is Status.CRITICAL
    assert len(result.message) == 200
    assert result.message.startswith("xxxx")


async def test_silent_command_says_how_it_exited() -> None:
    result = await make(["sh", "-c", "exit 1"]).run()
    assert result.status is Status.WARNING
    assert result.message == "sh exited 1 with no output"


async def test_command_killed_by_a_signal_is_unknown() -> None:
    result = await make(["sh", "-c", "kill -9 $$"]).run()
    assert result.status is Status.UNKNOWN
    assert result.message == "sh killed by SIGKILL with no output"


@pytest.mark.parametrize(
    ("printed", "value", "status", "message"),
    [
        ("5", 5.0, Status.OK, "5"),
        ("queue length: 15 jobs", 15.0, Status.WARNING, "15 (> 10): queue length: 15 jobs"),
        ("25.5", 25.5, Status.CRITICAL, "25.5 (> 20)"),
    ],
)
async def test_stdout_number_is_judged_by_thresholds(
    printed: str, value: float, status: Status, message: str
) -> None:
    probe = make(["echo", printed], value_from="stdout", warn=10, critical=20)
    result = await probe.run()
    assert (result.status, result.value, result.message) == (status, value, message)


async def test_stdout_lower_is_worse_with_op() -> None:
    probe = make(["echo", "3"], value_from="stdout", warn=10, critical=5, op="<")
    result = await probe.run()
    assert result.status is Status.CRITICAL
    assert result.message == "3 (< 5)"


async def test_stdout_without_a_number_is_unknown() -> None:
    result = await make(["echo", "all good on sda1"], value_from="stdout", warn=1).run()
    assert result.status is Status.UNKNOWN
    assert result.message == "no number in the output of echo: all good on sda1"


async def test_stdout_mode_non_zero_exit_is_critical() -> None:
    probe = make(["sh", "-c", "echo 'psql: connection refused' >&2; exit 2"], value_from="stdout")
    result = await probe.run()
    assert result.status is Status.CRITICAL
    assert result.message == "sh exited 2: psql: connection refused"


def test_first_number_skips_digits_inside_words() -> None:
    assert first_number(b"sda1 v2 used: -42.5e1%\n7") == -425.0
    assert first_number(b"version 1.2.3 then 9") == 9.0
    assert first_number(b"nothing here") is None


async def test_env_is_added_and_cwd_is_used(tmp_path: Path) -> None:
    probe = make(
        ["sh", "-c", 'echo "$NW_TEST_LIMIT"; pwd >&2'],
        value_from="stdout",
        env={"NW_TEST_LIMIT": 42},
        critical=40,
        cwd=str(tmp_path),
    )
    result = await probe.run()
    assert result.status is Status.CRITICAL
    assert result.value == 42
    # PATH comes from the engine's environment: `sh` was found at all.
    pwd = await make(["pwd"], cwd=str(tmp_path)).run()
    assert pwd.message == str(tmp_path)


async def test_command_that_outlives_the_timeout_is_killed_with_its_children(
    tmp_path: Path,
) -> None:
    leader, child = tmp_path / "leader.pid", tmp_path / "child.pid"
    script = f"echo $$ > {leader}; sleep 30 & echo $! > {child}; wait"
    probe = make(["sh", "-c", script], timeout=0.5)
    started = time.monotonic()
    result = await probe.run()
    pids = read_pids(leader, child)
    try:
        assert result.status is Status.CRITICAL
        assert result.message == "timed out after 0.5s"
        assert time.monotonic() - started < 3
        assert not psutil.pid_exists(pids[0]), "the command was not reaped"
        assert gone(pids[1]), "the command's child survived the timeout"
    finally:
        kill_leftovers(pids)


async def test_cancelled_check_kills_the_command(tmp_path: Path) -> None:
    pidfile = tmp_path / "sleep.pid"
    probe = make(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 30"], timeout=20)
    task = asyncio.create_task(probe.run())
    (pid,) = await asyncio.to_thread(read_pids, pidfile)
    try:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gone(pid), "the command survived cancellation"
    finally:
        kill_leftovers([pid])


async def test_background_child_holding_the_pipe_does_not_hang_past_timeout(
    tmp_path: Path,
) -> None:
    # The leader exits at once, but its child keeps stdout open: the group must still go.
    pidfile = tmp_path / "child.pid"
    probe = make(["sh", "-c", f"sleep 30 & echo $! > {pidfile}; exit 0"], timeout=0.5)
    result = await probe.run()
    (pid,) = read_pids(pidfile)
    try:
        assert result.status is Status.CRITICAL
        assert gone(pid)
    finally:
        kill_leftovers([pid])


async def test_missing_executable_is_critical() -> None:
    result = await make("nachtwacht-no-such-program --flag").run()
    assert result.status is Status.CRITICAL
    assert result.message == "command not found: nachtwacht-no-such-program"


async def test_non_executable_file_is_critical(tmp_path: Path) -> None:
    script = tmp_path / "check.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    result = await make([str(script)]).run()
    assert result.status is Status.CRITICAL
    assert result.message == f"command not executable: {script}"


async def test_missing_working_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = await make(["true"], cwd=str(missing)).run()
    assert result.status is Status.CRITICAL
    assert result.message == f"working directory not found: {missing}"


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        ({"command": ""}, "command is empty"),
        ({"command": []}, "command is empty"),
        ({"command": "sh -c 'unbalanced"}, "cannot split command"),
        ({"command": "true", "warn": 1}, "apply only with value_from: stdout"),
        ({"command": "true", "value_from": "stderr"}, "value_from"),
    ],
)
def test_bad_config_is_refused_with_a_reason(keys: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        Config(name="cmd", kind="command", **keys)


def test_under_uvloop_timeouts_kill_the_group_and_start_errors_are_named(tmp_path: Path) -> None:
    # `nachtwacht serve` runs on uvloop, whose subprocess code differs from asyncio's.
    uvloop = pytest.importorskip("uvloop")
    leader, child = tmp_path / "leader.pid", tmp_path / "child.pid"
    script = f"echo $$ > {leader}; sleep 30 & echo $! > {child}; wait"

    async def scenario() -> list[str]:
        timed_out = await make(["sh", "-c", script], timeout=0.5).run()
        missing_cwd = await make(["true"], cwd=str(tmp_path / "nope")).run()
        missing_cmd = await make(["nachtwacht-no-such-program"]).run()
        return [timed_out.message, missing_cwd.message, missing_cmd.message]

    messages = uvloop.run(scenario())
    pids = read_pids(leader, child)
    try:
        assert messages == [
            "timed out after 0.5s",
            f"working directory not found: {tmp_path / 'nope'}",
            "command not found: nachtwacht-no-such-program",
        ]
        assert gone(pids[0]) and gone(pids[1])
    finally:
        kill_leftovers(pids)
