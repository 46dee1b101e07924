"""`http`: status, body, latency and TLS certificate expiry of a URL."""

from __future__ import annotations

import calendar
import math
import re
import ssl
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, HttpUrl, field_validator

from nachtwacht.config.masking import mask_urls_in
from nachtwacht.config.redact import SecretHeaders, SecretStr
from nachtwacht.durations import Duration
from nachtwacht.probes.base import Probe, ProbeConfig, os_reason
from nachtwacht.probes.results import CheckResult, Status, worst

if TYPE_CHECKING:
    import aiohttp

    from nachtwacht.probes.context import ProbeContext

DAY = 86400.0
# `[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)` -> `wrong version number`
_SSL_NOISE = re.compile(r"^\[SSL: \w+\] |\s*\(_ssl\.c:\d+\)$")


class Config(ProbeConfig):
    kind: Literal["http"]
    url: HttpUrl
    method: Literal["GET", "HEAD", "POST", "PUT", "OPTIONS"] = "GET"
    headers: SecretHeaders = Field(default_factory=dict)
    body: SecretStr | None = None
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

    def __init__(self, config: Config, ctx: ProbeContext) -> None:
        import aiohttp

        super().__init__(config, ctx)
        self._url = str(config.url)
        self._target = f"{config.url.host}:{config.url.port}"
        self._need_body = config.body_contains is not None or config.body_not_contains is not None
        self._ssl = bool(config.verify_tls)
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        # Only look for a certificate when its expiry is judged on an https URL: plain checks,
        # the bulk at 333 checks/s, pay nothing for it.
        self._check_cert = self._url.startswith("https:") and (
            config.tls_expiry_warn_days is not None or config.tls_expiry_critical_days is not None
        )
        # The certificate of a kept-alive connection is parsed once, not on every check.
        self._cert_of: ssl.SSLObject | None = None
        self._cert_expires: float | None = None

    async def check(self) -> CheckResult:
        import aiohttp

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
                timeout=self._timeout,
            ) as response:
                expires = self._cert_expiry(response) if self._check_cert else None
                if self._need_body:
                    text: str | None = await response.text(errors="replace")
                else:
                    text = None
                    await response.read()
                status_code = response.status
        except TimeoutError:
            # aiohttp's own total timeout; Probe.run() says the same when its guard fires first.
            return CheckResult.critical(f"timed out after {cfg.timeout:g}s")
        except aiohttp.ClientConnectorDNSError as exc:
            return CheckResult.critical(
                f"DNS lookup failed for {cfg.url.host}: {os_reason(exc.os_error)}"
            )
        except aiohttp.ClientConnectorCertificateError as exc:
            cert_error = exc.certificate_error
            reason = getattr(cert_error, "verify_message", None) or str(cert_error)
            return CheckResult.critical(f"TLS certificate of {self._target} rejected: {reason}")
        except aiohttp.ClientSSLError as exc:
            # Not os_reason(): an SSLError's errno is an OpenSSL code (1 would read as EPERM).
            os_error = exc.os_error
            detail = os_error.strerror if isinstance(os_error, ssl.SSLError) else None
            reason = _SSL_NOISE.sub("", detail or os_reason(os_error))
            return CheckResult.critical(f"TLS handshake with {self._target} failed: {reason}")
        except aiohttp.ClientConnectorError as exc:
            return CheckResult.critical(
                f"cannot connect to {self._target}: {os_reason(exc.os_error)}"
            )
        except aiohttp.ClientError as exc:
            # `Connection reset by peer`, not `[Errno 104] Connection reset by peer`.
            reason = os_reason(exc) if isinstance(exc, OSError) else str(exc).strip()
            reason = reason or exc.__class__.__name__
            # results are shown to viewers and exported: the URL's query may be a signature
            message = mask_urls_in(f"{cfg.method} {self._url} failed: {reason}")
            return CheckResult.critical(message[:500])
        latency_ms = (time.perf_counter() - started) * 1000
        return self._judge(status_code, text, latency_ms, expires)

    def _judge(
        self, code: int, text: str | None, latency_ms: float, expires: float | None
    ) -> CheckResult:
        cfg = self.config
        value = float(code)
        if code not in cfg.expected_status:
            expected = ", ".join(str(s) for s in cfg.expected_status)
            return CheckResult.critical(f"HTTP {code}, expected {expected}", value, latency_ms)
        if text is not None:
            if cfg.body_contains is not None and cfg.body_contains not in text:
                return CheckResult.critical(
                    f"HTTP {code} but body lacks {cfg.body_contains!r}", value, latency_ms
                )
            if cfg.body_not_contains is not None and cfg.body_not_contains in text:
                return CheckResult.critical(
                    f"HTTP {code} but body contains {cfg.body_not_contains!r}", value, latency_ms
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
        if expires is not None:
            statuses.append(self._judge_cert(expires, notes))
        return CheckResult(worst(*statuses), "; ".join(notes), value, latency_ms)

    def _judge_cert(self, expires: float, notes: list[str]) -> Status:
        cfg = self.config
        days = (expires - self.ctx.clock.now()) / DAY
        if days <= 0:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
            notes.append(f"TLS certificate expired on {when}")
            return Status.CRITICAL
        # Rounded down: "5.0 days" when 4.99 are left would promise time that is not there.
        note = f"TLS certificate expires in {math.floor(days * 10) / 10:.1f} days"
        if cfg.tls_expiry_critical_days is not None and days < cfg.tls_expiry_critical_days:
            notes.append(note)
            return Status.CRITICAL
        if cfg.tls_expiry_warn_days is not None and days < cfg.tls_expiry_warn_days:
            notes.append(note)
            return Status.WARNING
        return Status.OK

    def _cert_expiry(self, response: aiohttp.ClientResponse) -> float | None:
        """notAfter (epoch seconds) of the certificate the answer came with, None if not TLS."""
        # A small body completes with the headers and releases `response.connection` before
        # we can look at it; the protocol object keeps the transport for as long as it is open.
        connection = response.connection
        protocol: Any = connection.protocol if connection else getattr(response, "_protocol", None)
        transport = getattr(protocol, "transport", None)
        if transport is None:
            return None
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return None
        if ssl_object is not self._cert_of:
            # `peercert` is empty when verification is off (Python only decodes verified
            # certificates), so read notAfter from the DER form, which is always there.
            der = ssl_object.getpeercert(binary_form=True)
            self._cert_expires = der_not_after(der) if der else None
            self._cert_of = ssl_object
        return self._cert_expires


def der_not_after(der: bytes) -> float | None:
    """notAfter of a DER X.509 certificate as epoch seconds; None when it cannot be read.

    Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
    signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... }, ... }  (RFC 5280 4.1)
    """
    try:
        _, start, _ = _tlv(der, 0)  # Certificate
        tag, pos, _ = _tlv(der, start)  # tbsCertificate
        if tag != 0x30:
            return None
        if der[pos] == 0xA0:  # explicit version
            pos = _tlv(der, pos)[2]
        for _ in range(3):  # serialNumber, signature algorithm, issuer
            pos = _tlv(der, pos)[2]
        tag, pos, _ = _tlv(der, pos)  # validity
        if tag != 0x30:
            return None
        pos = _tlv(der, pos)[2]  # notBefore
        tag, start, end = _tlv(der, pos)
        text = der[start:end].decode("ascii")
    except (IndexError, UnicodeDecodeError):
        return None
    # UTCTime YYMMDDHHMMSSZ (years 1950-2049) or GeneralizedTime YYYYMMDDHHMMSSZ.
    if tag == 0x17 and len(text) == 13 and text.endswith("Z"):
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18 or len(text) != 15 or not text.endswith("Z"):
        return None
    if not text[:14].isdigit():
        return None
    parts = (int(text[0:4]), int(text[4:6]), int(text[6:8]))
    clock = (int(text[8:10]), int(text[10:12]), int(text[12:14]))
    return float(calendar.timegm((*parts, *clock, 0, 0, 0)))


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the DER element at `pos`."""
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        size = length & 0x7F
        if size == 0 or pos + size > len(data):
            raise IndexError("bad DER length")
        length = int.from_bytes(data[pos : pos + size], "big")
        pos += size
    if pos + length > len(data):
        raise IndexError("DER element runs past the end")
    return tag, pos, pos + length
