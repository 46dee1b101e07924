"""`service`: is a systemd unit active, and/or are enough processes of a name running.

Decisions:

- With systemd running, a `unit` is judged by `systemctl show`: active OK; activating,
  reloading, deactivating (a restart passes through it) and maintenance WARNING; inactive and
  failed CRITICAL; LoadState=not-found CRITICAL "unit X not found"; any other state UNKNOWN.
- Without systemd (containers, this kind of test machine) the probe falls back to counting
  processes: the `process` key if given, else the unit name without its `.service`-style
  suffix and without a template instance (`worker@1.service` -> `worker`), and says so.
- A process matches when its name or the basename of its argv[0] equals `process`. Zombies do
  not count: they are dead. Fewer than `min_count` (including zero) is CRITICAL; `min_count`
  is a floor the operator chose, so being under it is not a mere warning.
- Value: the number of matching processes whenever processes were counted; 1/0 (active or not)
  for a unit judged by systemd alone.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from typing import Literal

import psutil
from pydantic import Field, model_validator

from nachtwacht.probes.base import Probe, ProbeConfig
from nachtwacht.probes.kinds.command import first_line, run_process
from nachtwacht.probes.results import CheckResult, Status, worst

SYSTEMD_DIR = "/run/systemd/system"
_UNIT_SUFFIXES = (
    ".service",
    ".socket",
    ".target",
    ".timer",
    ".mount",
    ".path",
    ".scope",
    ".slice",
    ".device",
    ".swap",
    ".automount",
)
_ACTIVE_STATUS = {
    "active": Status.OK,
    "activating": Status.WARNING,
    "reloading": Status.WARNING,
    "deactivating": Status.WARNING,
    "maintenance": Status.WARNING,
    "inactive": Status.CRITICAL,
    "failed": Status.CRITICAL,
}


class Config(ProbeConfig):
    kind: Literal["service"]
    # A leading "-" would read as a systemctl option; whitespace never belongs in a unit name.
    unit: str | None = Field(default=None, min_length=1, pattern=r"^[^-\s][^\s]*$")
    process: str | None = Field(default=None, min_length=1, pattern=r"^[^/]+$")
    min_count: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _something_to_check(self) -> Config:
        if self.unit is None and self.process is None:
            raise ValueError("give `unit` (a systemd unit such as nginx.service) and/or `process`")
        return self

    @property
    def fallback_process(self) -> str:
        """The process name checked when systemd is not there to ask about the unit."""
        if self.process is not None:
            return self.process
        return unit_process_name(self.unit or "")


def unit_process_name(unit: str) -> str:
    name = unit
    for suffix in _UNIT_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.split("@", 1)[0] or name


def systemd_running() -> bool:
    """The test systemd itself uses (sd_booted): /run/systemd/system exists."""
    return os.path.isdir(SYSTEMD_DIR) and shutil.which("systemctl") is not None


def count_processes(name: str) -> int:
    """Processes whose name or argv[0] basename is `name`. Blocking: run it in a thread."""
    count = 0
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        info = proc.info
        if info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        if info.get("name") == name:
            count += 1
            continue
        cmdline = info.get("cmdline") or []
        if cmdline and os.path.basename(cmdline[0]) == name:
            count += 1
    return count


def judge_unit(unit: str, show_output: str) -> CheckResult:
    """Turn `systemctl show --property=ActiveState,SubState,LoadState` output into a result."""
    props: dict[str, str] = {}
    for line in show_output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key.strip()] = value.strip()
    load = props.get("LoadState", "")
    active = props.get("ActiveState", "")
    sub = props.get("SubState", "")
    if load == "not-found":
        return CheckResult.critical(f"unit {unit} not found", 0.0)
    if not active:
        return CheckResult.unknown(f"systemctl reported no ActiveState for {unit}")
    status = _ACTIVE_STATUS.get(active, Status.UNKNOWN)
    detail = f"{active} ({sub})" if sub else active
    if load and load != "loaded":
        detail = f"{detail}, {load}"
    return CheckResult(status, f"{unit} {detail}", 1.0 if active == "active" else 0.0)


def describe_count(name: str, count: int, min_count: int) -> str:
    if count == 0:
        return f"no process named {name} running"
    noun = "process" if count == 1 else "processes"
    text = f"{count} {noun} named {name} running"
    return text if count >= min_count else f"{text}, expected at least {min_count}"


class ProbeImpl(Probe):
    config: Config

    async def check(self) -> CheckResult:
        cfg = self.config
        if cfg.unit is not None and systemd_running():
            unit_result = await self._check_unit(cfg.unit)
            if cfg.process is None:
                return unit_result
            procs = await self._check_processes(cfg.process)
            return CheckResult(
                worst(unit_result.status, procs.status),
                f"{unit_result.message}; {procs.message}",
                procs.value,
            )
        name = cfg.fallback_process
        result = await self._check_processes(name)
        if cfg.unit is not None:
            count = int(result.value or 0)
            result.message = f"systemd not running; checked processes named {name}: {count} running"
            if result.status is not Status.OK:
                result.message += f", expected at least {cfg.min_count}"
        return result

    async def _check_unit(self, unit: str) -> CheckResult:
        argv = ["systemctl", "show", "--property=ActiveState,SubState,LoadState", "--", unit]
        done = await run_process(argv)
        if done.returncode != 0:
            reason = first_line(done.stderr) or first_line(done.stdout) or "no output"
            return CheckResult.unknown(f"systemctl show {unit} failed: {reason}")
        return judge_unit(unit, done.stdout.decode("utf-8", errors="replace"))

    async def _check_processes(self, name: str) -> CheckResult:
        count = await asyncio.to_thread(count_processes, name)
        status = Status.OK if count >= self.config.min_count else Status.CRITICAL
        return CheckResult(status, describe_count(name, count, self.config.min_count), float(count))
