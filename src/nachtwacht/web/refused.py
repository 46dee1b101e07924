"""Refused ingestion, counted and logged: a misconfigured sender must be visible somewhere.

An application with the wrong DSN key, an Alertmanager with a revoked ingest key, a cron line
with a typo in its heartbeat token: each is refused (401/403/404) and, before this, left no
trace on the server. Every refusal is counted in `nachtwacht_ingest_refused_total{door,
reason}` and written to the log, at most one line per door and reason per minute (by the
injected clock), saying how many were refused since the previous line. A flood of bad keys
therefore costs one line a minute, not one per request.

Label values are fixed here (DOORS, REASONS), never taken from a request, so the series stay
few. The log shows where the last one came from and the first characters of its key, never the
whole key: it may be a real key of another project, or a real key pasted into the wrong place.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import HTTPConnection

from nachtwacht.clock import Clock, iso
from nachtwacht.web.state import app_state

log = logging.getLogger("nachtwacht.ingest")

# door -> the reasons it can give
DOORS: dict[str, tuple[str, ...]] = {
    # Sentry envelope/store (DSN key) and POST /api/v1/errors/events (ingest key)
    "errors": (
        "no_key",
        "unknown_key",
        "wrong_scope",
        "wrong_project",
        "unknown_project",
        "disabled_project",
    ),
    "alerts": ("no_key", "unknown_key", "wrong_scope"),  # /api/v1/alerts[/alertmanager]
    "ping": ("malformed", "unknown_key"),  # /ping/<token>
}
LOG_EVERY = 60.0  # seconds between two lines for one door and reason
_PREFIXES = ("nwk_", "nwt_")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def key_hint(key: str | None) -> str:
    """The first few characters of a key, enough to tell two keys apart and never enough to
    use one: at most 6 characters past a known prefix, and at most a quarter of the rest."""
    if not key:
        return "none"
    prefix = next((p for p in _PREFIXES if key.startswith(p)), "")
    rest = key[len(prefix) :]
    shown = rest[: min(6, len(rest) // 4)]
    # the key comes from the request: nothing in it may forge a log line
    return _UNSAFE.sub("?", prefix + shown) + "…"


@dataclass
class Refusals:
    clock: Clock
    every: float = LOG_EVERY
    totals: dict[tuple[str, str], int] = field(default_factory=dict)
    _unlogged: dict[tuple[str, str], int] = field(default_factory=dict)
    _logged_at: dict[tuple[str, str], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for door, reasons in DOORS.items():
            for reason in reasons:
                self.totals[(door, reason)] = 0

    def refuse(self, door: str, reason: str, *, key: str | None, remote: str | None) -> None:
        pair = (door, reason)
        if pair not in self.totals:
            raise ValueError(f"unknown door/reason {pair}")  # a bug here, not in the request
        self.totals[pair] += 1
        self._unlogged[pair] = self._unlogged.get(pair, 0) + 1
        now = self.clock.now()
        last = self._logged_at.get(pair)
        if last is not None and now - last < self.every:
            return
        count = self._unlogged.pop(pair)
        since = "since start" if last is None else f"since {iso(last)}"
        log.warning(
            "refused ingestion: %d %s request(s) %s: %s %s; the last from %s, key %s",
            count,
            door,
            since,
            reason.replace("_", " "),
            _HINTS[pair[1]],
            remote or "an unknown address",
            key_hint(key),
        )
        self._logged_at[pair] = now


_HINTS = {
    "no_key": "(no key sent)",
    "unknown_key": "(unknown or revoked)",
    "wrong_scope": "(an ingest key of another scope)",
    "wrong_project": "(a DSN key of another project: check the DSN's project id)",
    "unknown_project": "(no such project)",
    "disabled_project": "(the project is disabled)",
    "malformed": "(not a well-formed token)",
}


class RefusedCollector(Collector):
    def __init__(self, refusals: Refusals) -> None:
        self.refusals = refusals

    def collect(self) -> Iterator[CounterMetricFamily]:
        counter = CounterMetricFamily(
            "nachtwacht_ingest_refused",
            "Ingestion requests refused since the process started, by door and reason",
            labels=["door", "reason"],
        )
        for (door, reason), n in sorted(self.refusals.totals.items()):
            counter.add_metric([door, reason], float(n))
        yield counter


def refuse(request: HTTPConnection, door: str, reason: str, key: str | None) -> None:
    remote = request.client.host if request.client else None
    app_state(request).refusals.refuse(door, reason, key=key, remote=remote)
