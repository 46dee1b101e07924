"""`redis`: does Redis answer PING, how fast, and what does one INFO field say.

Without `info_field`: PING, value = round-trip in ms ("PONG from 127.0.0.1:6379 in 0.3 ms").

With `info_field`: run INFO (the default sections) and judge that field's number against
`warn`/`critical`, e.g. `used_memory`, `connected_clients`, `instantaneous_ops_per_sec`,
`rdb_changes_since_last_save`. Fields INFO nests (keyspace `db0`, `errorstat_ERR`) are
reached with a dot: `db0.keys`. A missing or non-numeric field is UNKNOWN naming it.

One client (and connection pool) per probe, created on first use, with connect and socket
timeouts equal to the probe's `timeout`. redis-py's own retries are cut to one immediate
reconnect: it replaces a connection the server dropped while idle, while a refused port
still fails in milliseconds (the probe's `retries` decides when that becomes an alert).
"""

from __future__ import annotations

import math
import socket
import time
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from nachtwacht.probes.base import Probe, ThresholdConfig, os_reason
from nachtwacht.probes.results import CheckResult, Status

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    from nachtwacht.probes.context import ProbeContext

_SCHEMES = ("redis", "rediss", "unix")


class Config(ThresholdConfig):
    kind: Literal["redis"]
    url: str = "redis://127.0.0.1:6379/0"
    info_field: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?$"
    )

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in _SCHEMES:
            # name the scheme only: the URL may carry a password
            raise ValueError(
                f"URL scheme must be redis://, rediss:// or unix://, not {scheme or 'none'!r} "
                "(e.g. redis://127.0.0.1:6379/0)"
            )
        return value


class ProbeImpl(Probe):
    config: Config

    def __init__(self, config: Config, ctx: ProbeContext) -> None:
        super().__init__(config, ctx)
        self._client: aioredis.Redis | None = None
        self._target = "redis"

    def _get_client(self) -> aioredis.Redis:
        # redis (and through it OpenTelemetry) is imported when a check runs, not when the
        # config is read: every command reads the config
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        if self._client is None:
            timeout = self.config.timeout
            self._client = aioredis.Redis.from_url(
                self.config.url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            )
            self._target = _target(self._client.connection_pool.connection_kwargs)
        return self._client

    async def check(self) -> CheckResult:
        from redis.exceptions import RedisError

        cfg = self.config
        client = self._get_client()
        started = time.perf_counter()
        try:
            if cfg.info_field is None:
                await client.ping()
            else:
                info = await client.info()
        except RedisError as exc:
            return CheckResult.critical(self._describe_error(exc))
        latency_ms = (time.perf_counter() - started) * 1000
        if cfg.info_field is None:
            return CheckResult.ok(
                f"PONG from {self._target} in {latency_ms:.1f} ms", latency_ms, latency_ms
            )
        return self._judge_field(info, cfg.info_field, latency_ms)

    def _judge_field(self, info: dict[str, Any], field: str, latency_ms: float) -> CheckResult:
        cfg = self.config
        raw = _lookup(info, field)
        if raw is _MISSING:
            return CheckResult.unknown(
                f"INFO from {self._target} has no field {field!r}", latency_ms=latency_ms
            )
        value = _number(raw)
        if value is None:
            shown = repr(raw) if not isinstance(raw, dict) else "a group of fields"
            return CheckResult.unknown(
                f"INFO field {field!r} is not a number: {shown[:60]}", latency_ms=latency_ms
            )
        status = cfg.judge(value) if cfg.has_thresholds else Status.OK
        return CheckResult(
            status, f"{field} = {_fmt(value)}{_breached(cfg, status)}", value, latency_ms
        )

    def _describe_error(self, exc: RedisError) -> str:
        from redis.exceptions import AuthenticationError, AuthorizationError
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        target = self._target
        if isinstance(exc, AuthenticationError | AuthorizationError):
            return f"authentication failed on {target}: {exc}"
        if isinstance(exc, RedisTimeoutError):
            return f"timed out talking to {target}: {exc}"
        if isinstance(exc, RedisConnectionError):
            os_error = _os_error(exc)
            if isinstance(os_error, socket.gaierror):
                host = target.rsplit(":", 1)[0]
                return f"DNS lookup failed for {host}: {os_reason(os_error)}"
            if os_error is not None:
                return f"cannot connect to {target}: {os_reason(os_error)}"
            return f"cannot connect to {target}: {exc}"
        return f"Redis error from {target}: {exc}"

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


_MISSING = object()


def _lookup(info: dict[str, Any], field: str) -> Any:
    if field in info:
        return info[field]
    group, _, key = field.partition(".")
    nested = info.get(group)
    if key and isinstance(nested, dict) and key in nested:
        return nested[key]
    return _MISSING


def _number(raw: Any) -> float | None:
    # redis-py already turns numeric INFO values into int/float; text like "1.2M" is not one
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    return float(raw) if math.isfinite(raw) else None


def _breached(cfg: ThresholdConfig, status: Status) -> str:
    """` (> 1073741824)`: like `ThresholdConfig.describe`, but without `:g` turning a byte
    limit into `1.07374e+09`."""
    limit = cfg.critical if status is Status.CRITICAL else cfg.warn
    if status is Status.OK or limit is None:
        return ""
    return f" ({cfg.op} {_fmt(limit)})"


def _fmt(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def _os_error(exc: BaseException) -> OSError | None:
    """The socket error redis-py wrapped (it keeps it as the exception's context)."""
    seen: BaseException | None = exc.__cause__ or exc.__context__
    for _ in range(5):  # a short walk: the socket error sits one or two links down
        if seen is None or isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _target(kwargs: dict[str, Any]) -> str:
    if kwargs.get("path"):
        return str(kwargs["path"])
    host = str(kwargs.get("host") or "localhost")
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{kwargs.get('port') or 6379}"
