"""`peer`: another Nachtwacht, watched from this one (watching the watchman, issue 16).

Two instances on different hosts, each with a `peer` probe on the other and no shared store:
when one dies, hangs or loses its store, the other pages through its own channels. That is
the protocol's "complete monitoring system failure", detected from outside within a minute.

The probe asks the peer's `/healthz`. With `token` (an API token of the peer with the viewer
role) it asks for the details and judges them itself:

- no answer (refused, reset, DNS, TLS, timeout): CRITICAL "peer ... does not answer";
- its store unavailable: CRITICAL "its store is down";
- its engine's heartbeat (the probe scheduler's last good tick, by the peer's own clock, so
  the two hosts' clocks need not agree) older than `max_heartbeat_age`: CRITICAL "its engine
  stalled";
- anything else the peer calls degraded (a failing engine module, the spool, nobody to page):
  WARNING with the peer's own summary; else OK. `value` is the heartbeat's age in seconds.

Without a token the peer says only its verdict: `ok` is OK, `down` (store and spool both
failing) CRITICAL, `degraded` WARNING, since the cause cannot be told apart from the outside.

The defaults (every 15 s, a 5 s timeout, two retries 10 s apart, severity 1) confirm a dead
peer within a minute, even one that hangs rather than refuses.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, HttpUrl

from nachtwacht.config.redact import SecretStr
from nachtwacht.durations import Duration
from nachtwacht.probes.base import Probe, ProbeConfig, Severity, os_reason
from nachtwacht.probes.results import CheckResult, Status

if TYPE_CHECKING:
    from nachtwacht.probes.context import ProbeContext

# /healthz with its details is a few kilobytes; a peer cannot make us hold more than this
MAX_BODY = 256 * 1024
HEARTBEAT_MODULE = "scheduler"


class Config(ProbeConfig):
    kind: Literal["peer"]
    url: HttpUrl  # the other instance's base URL, as its users open it
    token: SecretStr | None = None  # an API token of the peer with the viewer role
    max_heartbeat_age: Duration = 60.0
    verify_tls: bool = True
    interval: Duration = 15.0
    timeout: Duration = 5.0
    retries: int = Field(default=2, ge=0, le=100)
    retry_interval: Duration | None = 10.0
    severity: Severity = 1


class ProbeImpl(Probe):
    config: Config

    def __init__(self, config: Config, ctx: ProbeContext) -> None:
        super().__init__(config, ctx)
        base = str(config.url).rstrip("/")
        self._where = base
        self._healthz = f"{base}/healthz" + ("?details=true" if config.token else "")

    async def check(self) -> CheckResult:
        import aiohttp

        cfg = self.config
        headers = {"Authorization": f"Bearer {cfg.token}"} if cfg.token else None
        started = time.perf_counter()
        try:
            async with self.ctx.http_session().get(
                self._healthz,
                headers=headers,
                ssl=bool(cfg.verify_tls),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=cfg.timeout),
            ) as response:
                raw = await response.content.read(MAX_BODY)
                code = response.status
        except TimeoutError:
            return CheckResult.critical(
                f"peer {self._where} does not answer within {cfg.timeout:g}s"
            )
        except aiohttp.ClientConnectorError as exc:
            return CheckResult.critical(
                f"peer {self._where} does not answer: {os_reason(exc.os_error)}"
            )
        except (aiohttp.ClientError, OSError) as exc:
            reason = str(exc) or exc.__class__.__name__
            return CheckResult.critical(f"peer {self._where} does not answer: {reason}"[:500])
        latency = (time.perf_counter() - started) * 1000
        result = judge(self._where, code, raw, cfg.max_heartbeat_age, self.ctx.clock.now())
        result.latency_ms = latency
        return result


def judge(where: str, code: int, raw: bytes, max_age: float, now: float) -> CheckResult:
    """The verdict on one /healthz answer of the peer at `where`."""
    if code == 401:
        return CheckResult.critical(
            f"peer {where} refused the probe's token (401): is it an API token of that "
            "instance with the viewer role?"
        )
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("status") not in ("ok", "degraded", "down"):
        return CheckResult.critical(
            f"peer {where} answered HTTP {code} without a Nachtwacht health verdict"
        )
    if "modules" not in body:
        return _verdict_only(where, str(body["status"]))
    return _details(where, body, max_age, now)


def _verdict_only(where: str, status: str) -> CheckResult:
    if status == "ok":
        return CheckResult.ok(f"peer {where} ok")
    if status == "down":
        return CheckResult.critical(
            f"peer {where} is down: its store and its spool are both failing"
        )
    return CheckResult(
        Status.WARNING,
        f"peer {where} degraded (give the probe a viewer `token` of the peer to see why)",
    )


def _details(where: str, body: dict[str, Any], max_age: float, now: float) -> CheckResult:
    problems: list[str] = []
    store = body.get("store") or {}
    if store.get("available") is False:
        error = store.get("error")
        problems.append("its store is down" + (f" ({error})" if error else ""))
    # the peer's clock, not ours: the age must not depend on how well the two hosts agree
    at = body.get("at")
    at = float(at) if isinstance(at, int | float) else now
    modules = [m for m in body.get("modules") or [] if isinstance(m, dict)]
    beat = _last_beat(modules)
    age = None if beat is None else max(0.0, at - beat)
    if age is None:
        problems.append("its engine has not ticked since it started")
    elif age > max_age:
        problems.append(f"its engine stalled: the last tick was {age:.0f}s ago")
    if problems:
        return CheckResult.critical(f"peer {where}: {'; '.join(problems)}"[:500], age)
    ticked = f"engine ticked {age:.0f}s ago" if age is not None else "engine ticking"
    if body["status"] != "ok":
        summary = str(body.get("summary") or "").strip()
        unhealthy = [str(m.get("module")) for m in modules if not m.get("healthy")]
        why = summary or (f"modules {', '.join(unhealthy)}" if unhealthy else "")
        return CheckResult(
            Status.WARNING, f"peer {where} degraded: {why or body['status']}"[:500], age
        )
    return CheckResult.ok(f"peer {where} ok: {ticked}, store up", age)


def _last_beat(modules: list[dict[str, Any]]) -> float | None:
    """The scheduler's last good tick; any module's newest when it has none to show."""

    def last(m: dict[str, Any]) -> float | None:
        value = m.get("last_ok")
        return float(value) if isinstance(value, int | float) else None

    for module in modules:
        if module.get("module") == HEARTBEAT_MODULE:
            return last(module)
    beats = [b for b in (last(m) for m in modules) if b is not None]
    return max(beats) if beats else None
