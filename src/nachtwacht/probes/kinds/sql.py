"""`sql`: being written (placeholder so the registry imports)."""

from __future__ import annotations

from typing import Literal

from nachtwacht.probes.base import Probe, ProbeConfig
from nachtwacht.probes.results import CheckResult


class Config(ProbeConfig):
    kind: Literal["sql"]


class ProbeImpl(Probe):
    async def check(self) -> CheckResult:
        return CheckResult.unknown("not written yet")
