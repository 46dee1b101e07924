"""`tcp`: can a port be connected to, and how fast."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Literal

from pydantic import Field

from nachtwacht.durations import Duration
from nachtwacht.probes.base import Probe, ProbeConfig, os_reason
from nachtwacht.probes.results import CheckResult, Status


class Config(ProbeConfig):
    kind: Literal["tcp"]
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    latency_warn: Duration | None = None
    latency_critical: Duration | None = None


class ProbeImpl(Probe):
    config: Config

    async def check(self) -> CheckResult:
        cfg = self.config
        started = time.perf_counter()
        try:
            _reader, writer = await asyncio.open_connection(cfg.host, cfg.port)
        except OSError as exc:
            reason = os_reason(exc)
            if isinstance(exc, socket.gaierror):
                return CheckResult.critical(f"DNS lookup failed for {cfg.host}: {reason}")
            return CheckResult.critical(f"cannot connect to {cfg.host}:{cfg.port}: {reason}")
        latency_ms = (time.perf_counter() - started) * 1000
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
        status = Status.OK
        seconds = latency_ms / 1000
        if cfg.latency_critical is not None and seconds > cfg.latency_critical:
            status = Status.CRITICAL
        elif cfg.latency_warn is not None and seconds > cfg.latency_warn:
            status = Status.WARNING
        return CheckResult(
            status, f"connected to {cfg.host}:{cfg.port} in {latency_ms:.1f} ms", latency_ms, latency_ms
        )
