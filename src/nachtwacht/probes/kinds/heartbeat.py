"""`heartbeat`: a job (cron, backup, worker) pings Nachtwacht; silence or a failure is an alert.

The job calls `/ping/<token>` (GET, POST or HEAD) when it succeeds, `/ping/<token>/start` when
it starts and `/ping/<token>/fail` when it fails, like healthchecks.io. This probe only reads
the pings the web router stored (`nachtwacht.probes.heartbeats`); `interval` is how often the
state is evaluated, not how often the job runs (that is `period`).

Decisions, in the order they are applied:

- A `start` newer than the last outcome (success or fail) and older than `grace` means the job
  is running too long: CRITICAL "started 12m ago and has not finished".
- A `fail` at least as new as the last success: CRITICAL "job reported failure at ...". It stays
  critical while a retry runs; only a success clears it (as healthchecks does).
- A `start` within `grace` (the job is running right now) is OK even if the last success is
  older than period+grace: the job is late to start, but it did start, and the previous
  rule catches it if it never finishes.
- Otherwise OK while the last success is within period+grace, CRITICAL "late: ..." after.
- A heartbeat that never pinged counts its lateness from when a probe first saw it (kept in
  engine_meta under `heartbeat.first_seen.<token>`, so a restart does not reset it); until
  period+grace has passed it is OK "waiting for the first ping", not instantly down.
- No store, or the store unreachable: UNKNOWN; the probe cannot tell.

value = seconds since the last success, or None when there has been none.
"""

from __future__ import annotations

import asyncio
import string
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from nachtwacht.clock import iso
from nachtwacht.config.redact import SecretStr
from nachtwacht.durations import Duration
from nachtwacht.probes.base import Probe, ProbeConfig
from nachtwacht.probes.heartbeats import first_seen_key, last_events, valid_token
from nachtwacht.probes.results import CheckResult
from nachtwacht.store.db import Store, StoreError

if TYPE_CHECKING:
    from nachtwacht.probes.context import ProbeContext

_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "_-")


class Config(ProbeConfig):
    kind: Literal["heartbeat"]
    token: SecretStr = Field(
        description="8-128 characters of A-Z a-z 0-9 _ -, used in /ping/<token>"
    )
    period: Duration
    grace: Duration = 300.0
    # how often the stored pings are evaluated; cheap (three indexed look-ups), so fairly often
    interval: Duration = 30.0

    @field_validator("token")
    @classmethod
    def _token(cls, value: str) -> str:
        if not valid_token(value):
            raise ValueError(
                f"a token is 8-128 characters of A-Z a-z 0-9 _ - (got {len(value)} characters"
                f"{', some not allowed' if set(value) - _TOKEN_CHARS else ''}); "
                "a random one: python3 -c 'import secrets; print(secrets.token_urlsafe(16))'"
            )
        return value

    @model_validator(mode="after")
    def _positive_period(self) -> Config:
        if self.period < 1:
            raise ValueError("period must be at least 1s")
        return self


class ProbeImpl(Probe):
    config: Config

    def __init__(self, config: Config, ctx: ProbeContext) -> None:
        super().__init__(config, ctx)
        self._first_seen: float | None = None

    async def check(self) -> CheckResult:
        store = self.ctx.store
        if store is None:
            return CheckResult.unknown("heartbeat needs the store, and none is configured")
        now = self.ctx.clock.now()
        try:
            events, first_seen = await asyncio.to_thread(self._load, store, now)
        except StoreError as exc:
            return CheckResult.unknown(f"cannot read heartbeat pings: {exc}")
        self._first_seen = first_seen
        return evaluate(self.config, now, events, first_seen)

    def _load(self, store: Store, now: float) -> tuple[dict[str, float], float]:
        with store.begin() as conn:
            first_seen = self._first_seen
            if first_seen is None:
                key = first_seen_key(self.config.token)
                first_seen = store.get_meta(conn, key)
                if first_seen is None:
                    first_seen = now
                    store.set_meta(conn, key, now, now)
            return last_events(conn, self.config.token), float(first_seen)


def evaluate(cfg: Config, now: float, events: dict[str, float], first_seen: float) -> CheckResult:
    """The state from the newest ts of each event (pure, so it is easy to reason about)."""
    success = events.get("success")
    fail = events.get("fail")
    start = events.get("start")
    age = None if success is None else max(0.0, now - success)
    expected = f"expected every {human(cfg.period)} (+{human(cfg.grace)} grace)"
    outcome = max((ts for ts in (success, fail) if ts is not None), default=None)
    running = start is not None and (outcome is None or start > outcome)

    if running and start is not None and now - start > cfg.grace:
        return CheckResult.critical(
            f"started {ago(now - start)} ago and has not finished (grace {human(cfg.grace)})", age
        )
    if fail is not None and (success is None or fail >= success):
        extra = f", running again since {ago(now - start)} ago" if running and start else ""
        return CheckResult.critical(
            f"job reported failure at {iso(fail)} ({ago(now - fail)} ago{extra})", age
        )
    if running and start is not None:
        last = "no success yet" if age is None else f"last success {ago(age)} ago"
        return CheckResult.ok(f"running: started {ago(now - start)} ago ({last})", age)
    limit = cfg.period + cfg.grace
    if age is not None:
        if age > limit:
            return CheckResult.critical(f"late: last ping {ago(age)} ago, {expected}", age)
        return CheckResult.ok(f"last ping {ago(age)} ago, {expected}", age)
    waited = max(0.0, now - first_seen)
    if waited > limit:
        return CheckResult.critical(f"never pinged: first seen {ago(waited)} ago, {expected}")
    return CheckResult.ok(f"waiting for the first ping (first seen {ago(waited)} ago, {expected})")


_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def ago(seconds: float) -> str:
    """`2h 3m`: the two largest units, rounded down, which is what a reader of an alert wants."""
    return human(seconds, parts=2)


def human(seconds: float, parts: int = 4) -> str:
    """`1h 30m`: up to `parts` consecutive units from the largest non-zero one."""
    rest = int(max(0.0, seconds))
    out: list[str] = []
    slots = 0
    for unit, size in _UNITS:
        n, rest = divmod(rest, size)
        if slots == 0 and n == 0:
            continue
        slots += 1
        if n:
            out.append(f"{n}{unit}")
        if slots == parts:
            break
    return " ".join(out) or "0s"
