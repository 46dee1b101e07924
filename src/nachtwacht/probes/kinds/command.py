"""`command`: run a program and judge its exit code (Nagios style) or the number it prints.

Decisions, so operators know what a result means:

- `value_from: exit` follows the Nagios plugin convention: exit 0 OK, 1 WARNING, 2 CRITICAL,
  anything else (including death by a signal) UNKNOWN. `warn`/`critical` are refused here
  because an exit code is already a verdict.
- `value_from: stdout` takes the first standalone number printed on stdout (`"queue: 42"` gives
  42; digits inside words such as `sda1` are not numbers) and judges it with the thresholds.
  A non-zero exit is CRITICAL: the command that measures the thing failed, which in practice
  means the thing is broken (e.g. `psql -c 'select count(*) …'` against a database that is
  down). Exit 0 without a number is UNKNOWN: the probe cannot tell, the script needs fixing.
- The command runs without a shell, in its own session (process group), with stdin closed.
  When the check times out or is cancelled, the whole group is killed with SIGKILL and reaped,
  so neither the command nor anything it started is left running.
- Output is read up to 64 KiB per stream; the rest is drained and dropped, so a runaway command
  cannot grow the engine's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator, model_validator

from nachtwacht.config.redact import SecretCommand, SecretNamed
from nachtwacht.probes.base import Probe, ThresholdConfig
from nachtwacht.probes.results import CheckResult, Status

OUTPUT_LIMIT = 64 * 1024
MESSAGE_LIMIT = 200
_EXIT_STATUS = {0: Status.OK, 1: Status.WARNING, 2: Status.CRITICAL}
# A number that stands on its own: not glued to a word or another number (`sda1`, `v2`, `1.2.3`).
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?![\w.])")


class Config(ThresholdConfig):
    kind: Literal["command"]
    command: SecretCommand
    value_from: Literal["exit", "stdout"] = "exit"
    env: SecretNamed = Field(default_factory=dict)
    cwd: str | None = Field(default=None, min_length=1)

    @field_validator("command")
    @classmethod
    def _parsable(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str):
            try:
                argv = shlex.split(value)
            except ValueError as exc:  # unbalanced quotes
                raise ValueError(f"cannot split command into words: {exc}") from None
        else:
            argv = value
        if not argv or not argv[0]:
            raise ValueError("command is empty; give a program and its arguments")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _scalars_as_text(cls, value: object) -> object:
        # YAML turns `PGPORT: 5432` into an int; the environment only holds text.
        if isinstance(value, dict):
            return {
                k: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                for k, v in value.items()
            }
        return value

    @model_validator(mode="after")
    def _thresholds_need_stdout(self) -> Config:
        if self.value_from == "exit" and self.has_thresholds:
            raise ValueError(
                "warn/critical apply only with value_from: stdout; with value_from: exit the "
                "exit code decides (0 ok, 1 warning, 2 critical, other unknown)"
            )
        return self

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.command) if isinstance(self.command, str) else list(self.command)


@dataclass(slots=True)
class Completed:
    returncode: int
    stdout: bytes
    stderr: bytes


async def run_process(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    limit: int = OUTPUT_LIMIT,
) -> Completed:
    """Run `argv` to completion; on timeout/cancel/error kill its whole process group.

    Raises what `create_subprocess_exec` raises (FileNotFoundError, PermissionError) when the
    program cannot be started.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
        start_new_session=True,  # its own process group, so one killpg reaches its children
    )
    finished = False
    try:
        assert proc.stdout is not None and proc.stderr is not None
        stdout, stderr, returncode = await asyncio.gather(
            _read_capped(proc.stdout, limit), _read_capped(proc.stderr, limit), proc.wait()
        )
        finished = True
        return Completed(returncode, stdout, stderr)
    finally:
        if not finished:
            # The group id is the leader's pid (setsid). Signal it even if the leader has
            # exited: a background child may still hold the pipes open.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.returncode is None:
                await proc.wait()


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Keep the first `limit` bytes; drain the rest so the child never blocks on a full pipe."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(65536):
        if size < limit:
            chunks.append(chunk[: limit - size])
        size += len(chunk)
    return b"".join(chunks)


def first_line(data: bytes) -> str:
    """The first non-blank line, stripped and cut to a message-sized length."""
    for line in data.decode("utf-8", errors="replace").splitlines():
        if line.strip():
            text = line.strip()
            return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"
    return ""


def first_number(data: bytes) -> float | None:
    match = _NUMBER.search(data.decode("utf-8", errors="replace"))
    return float(match.group()) if match else None


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited {returncode}"


class ProbeImpl(Probe):
    config: Config

    def __init__(self, config: Config, ctx) -> None:
        super().__init__(config, ctx)
        self._argv = config.argv
        self._env = {**os.environ, **config.env} if config.env else None

    async def check(self) -> CheckResult:
        cfg = self.config
        try:
            done = await run_process(self._argv, env=self._env, cwd=cfg.cwd)
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            return CheckResult.critical(self._start_failure(exc))
        line = first_line(done.stdout) or first_line(done.stderr)
        if cfg.value_from == "exit":
            return self._judge_exit(done.returncode, line)
        return self._judge_stdout(done, line)

    def _start_failure(self, exc: OSError) -> str:
        """Why the program did not start. asyncio's loop names a bad cwd in the error and
        uvloop does not, so look at the cwd ourselves (only on this failure path)."""
        cwd = self.config.cwd
        if cwd is not None:
            if not os.path.exists(cwd):
                return f"working directory not found: {cwd}"
            if not os.path.isdir(cwd):
                return f"working directory is not a directory: {cwd}"
            if not os.access(cwd, os.X_OK):
                return f"working directory not accessible: {cwd}"
        if isinstance(exc, PermissionError):
            return f"command not executable: {self._argv[0]}"
        return f"command not found: {self._argv[0]}"

    def _judge_exit(self, code: int, line: str) -> CheckResult:
        status = _EXIT_STATUS.get(code, Status.UNKNOWN)
        message = line or f"{self._argv[0]} {describe_exit(code)} with no output"
        if code < 0 and line:
            message = f"{self._argv[0]} {describe_exit(code)}: {line}"
        return CheckResult(status, message, float(code))

    def _judge_stdout(self, done: Completed, line: str) -> CheckResult:
        cfg = self.config
        program = self._argv[0]
        if done.returncode != 0:
            detail = f": {line}" if line else " with no output"
            return CheckResult.critical(
                f"{program} {describe_exit(done.returncode)}{detail}", float(done.returncode)
            )
        value = first_number(done.stdout)
        if value is None:
            shown = first_line(done.stdout)
            detail = f": {shown}" if shown else " (stdout was empty)"
            return CheckResult.unknown(f"no number in the output of {program}{detail}")
        status = cfg.judge(value)
        message = f"{value:g}{cfg.describe(status)}"
        stdout_line = first_line(done.stdout)
        if stdout_line and _NUMBER.fullmatch(stdout_line) is None:  # say what it printed
            message = f"{message}: {stdout_line}"
        return CheckResult(status, message, value)
