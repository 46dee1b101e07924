"""The durations of one minute of requests, kept across reads so its p95 stays exact or close.

Exact counts while a minute has at most `EXACT_LIMIT` distinct durations (p95 is then exact),
then log buckets of relative width `ALPHA` (p95 within 1%), as DDSketch does. Stored in
engine_meta as `{"e": [[µs, count], ...]}` or `{"b": [[bucket, count], ...]}`.
"""

from __future__ import annotations

import math
from typing import Any

EXACT_LIMIT = 256  # distinct durations a minute's sketch keeps exactly
ALPHA = 0.01  # relative accuracy of the bucketed sketch
GAMMA = (1 + ALPHA) / (1 - ALPHA)
LOG_GAMMA = math.log(GAMMA)


def _bucket(us: int) -> int:
    return math.ceil(math.log(max(us, 1)) / LOG_GAMMA)


def _bucket_value(index: int) -> float:
    # the point of (GAMMA^(i-1), GAMMA^i] within ALPHA of every value in it
    return 2 * GAMMA**index / (GAMMA + 1)


class Sketch:
    """Durations (µs) of one minute: exact counts, or log buckets once there are many."""

    __slots__ = ("exact", "buckets")

    def __init__(self) -> None:
        self.exact: dict[int, int] | None = {}
        self.buckets: dict[int, int] = {}

    def add(self, us: int, count: int = 1) -> None:
        if self.exact is not None:
            self.exact[us] = self.exact.get(us, 0) + count
            if len(self.exact) > EXACT_LIMIT:
                self._collapse()
        else:
            index = _bucket(us)
            self.buckets[index] = self.buckets.get(index, 0) + count

    def _collapse(self) -> None:
        assert self.exact is not None
        exact, self.exact = self.exact, None
        for us, count in exact.items():
            self.add(us, count)

    def merge(self, other: Sketch) -> None:
        if other.exact is not None:
            for us, count in other.exact.items():
                self.add(us, count)
            return
        if self.exact is not None:
            self._collapse()
        for index, count in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + count

    def quantile(self, q: float) -> float | None:
        """The nearest-rank q-quantile in µs (exact, or within ALPHA once bucketed)."""
        items = sorted((self.exact if self.exact is not None else self.buckets).items())
        total = sum(count for _, count in items)
        if not total:
            return None
        rank = max(1, math.ceil(q * total - 1e-9))
        seen = 0
        for key, count in items:
            seen += count
            if seen >= rank:
                return float(key) if self.exact is not None else _bucket_value(key)
        return None  # unreachable: the counts sum to total

    def dump(self) -> dict[str, list[list[int]]]:
        if self.exact is not None:
            return {"e": [[k, c] for k, c in self.exact.items()]}
        return {"b": [[k, c] for k, c in self.buckets.items()]}

    @classmethod
    def load(cls, value: Any) -> Sketch | None:
        if not isinstance(value, dict):
            return None
        sketch = cls()
        try:
            if "b" in value:
                sketch.exact = None
                sketch.buckets = {int(k): int(c) for k, c in value["b"]}
            else:
                sketch.exact = {int(k): int(c) for k, c in value["e"]}
        except (KeyError, TypeError, ValueError):
            return None
        return sketch
