"""`http`: status, body, latency and TLS certificate expiry of a URL."""

from __future__ import annotations

import ssl
import time
from datetime import UTC, datetime
from typing import Literal

import aiohttp
from pydantic import Field, HttpUrl, field_validator

from nachtwacht.durations import Duration
from nachtwacht.probes.base import Probe, ProbeConfig, os_reason
from nachtwacht.probes.results import CheckResult, Status, worst


class Config(ProbeConfig):
    kind: Literal["http"]
    url: HttpUrl
    method: Literal["GET", "HEAD", "POST", "PUT", "OPTIONS"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    expected_status: list[int] = Field(default_factory=lambda: [200])
    body_contains: str | None = None
    body_not_contains: str | None = None
    latency_warn: Duration | None = None
    latency_critical: Duration | None = None
    tls_expiry_warn_days: float | None = 14
    tls_expiry_critical_days: float | None = 3
    verify_tls: bool = True
    follow_redirects: bool = True

    @field_validator("expected_status", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, int) else value


class ProbeImpl(Probe):
    config: Config

    def __init__(self, config: Config, ctx) -> None:
        super().__init__(config, ctx)
        self._url = str(config.url)
        self._https = self._url.startswith("https:")
        self._need_body = config.body_contains is not None or config.body_not_contains is not None
        self._ssl: ssl.SSLContext | bool = True if config.verify_tls else False

    async def check(self) -> CheckResult:
        cfg = self.config
        session = self.ctx.http_session()
        started = time.perf_counter()
        try:
            async with session.request(
                cfg.method,
                self._url,
                headers=cfg.headers or None,
                data=cfg.body,
                allow_redirects=cfg.follow_redirects,
                ssl=self._ssl,
                timeout=aiohttp.ClientTimeout(total=cfg.timeout),
            ) as response:
                cert_days = self._cert_days_left(response) if self._https else None
                text = await response.text(errors="replace") if self._need_body else None
                if not self._need_body:
                    await response.read()
                status_code = response.status
        except aiohttp.ClientConnectorDNSError as exc:
            return CheckResult.critical(f"DNS lookup failed for {cfg.url.host}: {exc.os_error}")
        except aiohttp.ClientConnectorCertificateError as exc:
            return CheckResult.critical(f"TLS certificate rejected: {exc.certificate_error}")
        except aiohttp.ClientConnectorError as exc:
            return CheckResult.critical(f"cannot connect to {cfg.url.host}:{exc.port}: {os_reason(exc.os_error)}")
        except aiohttp.ClientError as exc:
            return CheckResult.critical(f"HTTP error: {exc.__class__.__name__}: {exc}")
        latency_ms = (time.perf_counter() - started) * 1000
        return self._judge(status_code, text, latency_ms, cert_days)

    def _judge(
        self, code: int, text: str | None, latency_ms: float, cert_days: float | None
    ) -> CheckResult:
        cfg = self.config
        if code not in cfg.expected_status:
            expected = ", ".join(str(s) for s in cfg.expected_status)
            return CheckResult(
                Status.CRITICAL, f"HTTP {code}, expected {expected}", code, latency_ms
            )
        if text is not None:
            if cfg.body_contains is not None and cfg.body_contains not in text:
                return CheckResult(
                    Status.CRITICAL,
                    f"HTTP {code} but body lacks {cfg.body_contains!r}",
                    code,
                    latency_ms,
                )
            if cfg.body_not_contains is not None and cfg.body_not_contains in text:
                return CheckResult(
                    Status.CRITICAL,
                    f"HTTP {code} but body contains {cfg.body_not_contains!r}",
                    code,
                    latency_ms,
                )
        statuses = [Status.OK]
        notes = [f"HTTP {code} in {latency_ms:.0f} ms"]
        seconds = latency_ms / 1000
        if cfg.latency_critical is not None and seconds > cfg.latency_critical:
            statuses.append(Status.CRITICAL)
            notes.append(f"slower than {cfg.latency_critical:g}s")
        elif cfg.latency_warn is not None and seconds > cfg.latency_warn:
            statuses.append(Status.WARNING)
            notes.append(f"slower than {cfg.latency_warn:g}s")
        if cert_days is not None:
            if cfg.tls_expiry_critical_days is not None and cert_days < cfg.tls_expiry_critical_days:
                statuses.append(Status.CRITICAL)
                notes.append(f"TLS certificate expires in {cert_days:.1f} days")
            elif cfg.tls_expiry_warn_days is not None and cert_days < cfg.tls_expiry_warn_days:
                statuses.append(Status.WARNING)
                notes.append(f"TLS certificate expires in {cert_days:.1f} days")
        return CheckResult(worst(*statuses), "; ".join(notes), float(code), latency_ms)

    def _cert_days_left(self, response: aiohttp.ClientResponse) -> float | None:
        transport = response.connection.transport if response.connection else None
        if transport is None:
            return None
        cert = transport.get_extra_info("peercert")
        if not cert or "notAfter" not in cert:
            return None
        expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), UTC)
        return (expires.timestamp() - self.ctx.clock.now()) / 86400
