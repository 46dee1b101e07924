"""What a check returns, and the states a probe can be in."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(enum.IntEnum):
    """The status of one check result; the integer is what the store and /metrics hold."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class State(enum.StrEnum):
    """The state of a probe: a confirmed status, or `pending` while retries are not used up."""

    NEW = "new"  # never checked yet
    OK = "ok"
    PENDING = "pending"
    WARNING = "warning"
    CRITICAL = "critical"
    UNKNOWN = "unknown"
    # a probe with `locations:` failing at fewer than its quorum: shown, never paged
    DEGRADED = "degraded"

    @classmethod
    def of(cls, status: Status) -> State:
        return cls(status.label)


@dataclass(slots=True)
class CheckResult:
    status: Status
    message: str
    value: float | None = None
    latency_ms: float | None = None

    @classmethod
    def ok(cls, message: str, value: float | None = None, latency_ms: float | None = None):
        return cls(Status.OK, message, value, latency_ms)

    @classmethod
    def critical(cls, message: str, value: float | None = None, latency_ms: float | None = None):
        return cls(Status.CRITICAL, message, value, latency_ms)

    @classmethod
    def unknown(cls, message: str, value: float | None = None, latency_ms: float | None = None):
        return cls(Status.UNKNOWN, message, value, latency_ms)


def worst(*statuses: Status) -> Status:
    """The more serious of several statuses (critical > warning > unknown > ok)."""
    rank = {Status.OK: 0, Status.UNKNOWN: 1, Status.WARNING: 2, Status.CRITICAL: 3}
    return max(statuses, key=lambda s: rank[s], default=Status.OK)
