"""`tcp`: can a port be connected to, and how fast."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import time
from typing import Literal

from pydantic import Field

from nachtwacht.durations import Duration
from nachtwacht.probes.base import Probe, ProbeConfig, os_reason
from nachtwacht.probes.results import CheckResult, Status

_ERRNO = re.compile(r"\[Errno (\d+)\]")


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
        except socket.gaierror as exc:
            return CheckResult.critical(f"DNS lookup failed for {cfg.host}: {os_reason(exc)}")
        except OSError as exc:
            return CheckResult.critical(
                f"cannot connect to {cfg.host}:{cfg.port}: {connect_reason(exc)}"
            )
        latency_ms = (time.perf_counter() - started) * 1000
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        status, note = Status.OK, ""
        seconds = latency_ms / 1000
        if cfg.latency_critical is not None and seconds > cfg.latency_critical:
            status, note = Status.CRITICAL, f" (slower than {cfg.latency_critical:g}s)"
        elif cfg.latency_warn is not None and seconds > cfg.latency_warn:
            status, note = Status.WARNING, f" (slower than {cfg.latency_warn:g}s)"
        message = f"connected to {cfg.host}:{cfg.port} in {latency_ms:.1f} ms{note}"
        return CheckResult(status, message, latency_ms, latency_ms)


def connect_reason(exc: OSError) -> str:
    """Why a connect failed, in words, also when every address of the host failed alike.

    On Python 3.11 a host with several addresses (`localhost`: ::1 and 127.0.0.1) that all
    refuse raises `OSError("Multiple exceptions: [Errno 111] ..., [Errno 111] ...")` with no
    errno; the operator wants `Connection refused`.
    """
    text = str(exc)
    if exc.errno is None and text.startswith("Multiple exceptions: "):
        codes = set(_ERRNO.findall(text))
        if len(codes) == 1:
            return os.strerror(int(codes.pop()))
    return os_reason(exc)
