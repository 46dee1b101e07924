"""The shape every probe kind shares: its config base class and its runtime base class."""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nachtwacht.durations import Duration
from nachtwacht.probes.results import CheckResult, Status
from nachtwacht.tailer import os_reason as os_reason  # the probes' name for it

if TYPE_CHECKING:
    from nachtwacht.probes.context import ProbeContext

Severity = Literal[1, 2, 3]
Location = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
QUORUM = re.compile(r"^\s*(\d{1,2})\s+of\s+(\d{1,2})\s*$")


class ProbeConfig(BaseModel):
    """Keys every probe has; each kind subclasses it with `kind: Literal[...]` and its keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")
    kind: str
    description: str = ""
    interval: Duration = 60.0
    timeout: Duration = 10.0
    retries: int = Field(default=1, ge=0, le=100)
    retry_interval: Duration | None = None
    component: str = "default"
    depends_on: list[str] = Field(default_factory=list)
    severity: Severity = 2
    # which confirmed state raises an alert: critical only (default), warning too, or never
    alert_on: Literal["critical", "warning", "never"] = "critical"
    enabled: bool = True
    # where the probe runs (docs/probes.md, decision 25): empty runs it on the server as it
    # always did; names of agent locations (and the server's own, `server.location`) run it
    # at each, and `down_when: "k of n"` says how many must see it fail before it pages
    locations: list[Location] = Field(default_factory=list, max_length=16)
    down_when: str | None = Field(default=None, max_length=16)

    @model_validator(mode="after")
    def _timing(self) -> ProbeConfig:
        if self.interval < 1:
            raise ValueError("interval must be at least 1s")
        if self.timeout <= 0:
            raise ValueError("timeout must be more than 0s")
        if len(set(self.locations)) != len(self.locations):
            raise ValueError("locations: each location may be named once")
        if self.down_when is not None:
            if not self.locations:
                raise ValueError("down_when needs locations: [...] to count")
            match = QUORUM.match(self.down_when)
            n = len(self.locations)
            if match is None or int(match[2]) != n or not 1 <= int(match[1]) <= n:
                raise ValueError(
                    f"down_when must be 'k of {n}' with 1 <= k <= {n} (one per location), "
                    f"not '{self.down_when}'"
                )
        return self

    @property
    def quorum(self) -> int:
        """How many locations must see a failure before the probe is down (default: a majority)."""
        if self.down_when is not None:
            match = QUORUM.match(self.down_when)
            assert match is not None  # validated above
            return int(match[1])
        return len(self.locations) // 2 + 1

    @property
    def effective_retry_interval(self) -> float:
        return self.retry_interval if self.retry_interval is not None else self.interval


class ThresholdConfig(ProbeConfig):
    """A probe that judges a number: `warn`/`critical` limits compared with `op`.

    `op: ">"` (the default) means higher is worse; `op: "<"` means lower is worse.
    """

    warn: float | None = None
    critical: float | None = None
    op: Literal[">", ">=", "<", "<="] = ">"

    def judge(self, value: float) -> Status:
        if self.critical is not None and _breaches(value, self.op, self.critical):
            return Status.CRITICAL
        if self.warn is not None and _breaches(value, self.op, self.warn):
            return Status.WARNING
        return Status.OK

    def describe(self, status: Status) -> str:
        """` (> 10)` naming the limit a status breached, or `""` when ok."""
        limit = self.critical if status is Status.CRITICAL else self.warn
        if limit is None or status is Status.OK:
            return ""
        return f" ({self.op} {format_number(limit)})"

    @property
    def has_thresholds(self) -> bool:
        return self.warn is not None or self.critical is not None


def _breaches(value: float, op: str, limit: float) -> bool:
    if op == ">":
        return value > limit
    if op == ">=":
        return value >= limit
    if op == "<":
        return value < limit
    return value <= limit


class Probe:
    """A configured probe at run time. Kinds override `check`; `run` adds the safety net."""

    kind: ClassVar[str]
    config_class: ClassVar[type[ProbeConfig]]

    def __init__(self, config: Any, ctx: ProbeContext) -> None:
        self.config = config
        self.ctx = ctx

    @property
    def name(self) -> str:
        return self.config.name

    async def check(self) -> CheckResult:
        raise NotImplementedError  # every kind defines it; Probe itself is never instantiated

    async def run(self) -> CheckResult:
        """One check that never raises and never hangs past `timeout`."""
        started = time.perf_counter()
        try:
            # asyncio.timeout rather than wait_for: no extra task per check
            async with asyncio.timeout(self.config.timeout):
                result = await self.check()
        except TimeoutError:
            elapsed = (time.perf_counter() - started) * 1000
            return CheckResult(
                Status.CRITICAL, f"timed out after {self.config.timeout:g}s", None, elapsed
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a probe's failure is a result, never an engine crash
            elapsed = (time.perf_counter() - started) * 1000
            return CheckResult(Status.CRITICAL, describe_exception(exc), None, elapsed)
        if result.latency_ms is None:
            result.latency_ms = (time.perf_counter() - started) * 1000
        return result

    async def close(self) -> None:
        """Release connections and files held between checks."""


def describe_exception(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"[:500]


def format_number(value: float) -> str:
    """`1073741824`, not `1.07374e+09`; `0.25` stays `0.25`."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6g}" if abs(value) < 1e6 else f"{value:,.2f}"
