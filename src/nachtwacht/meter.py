"""Counters and histograms as plain ints, read by /metrics at scrape time.

The hot paths (a probe check at 333 checks/s, an error event at 3,300/s) count with one dict
lookup and an integer add: no lock, no metric object per label set. prometheus_client's own
Counter/Histogram take a lock on every `inc()`/`observe()`; here the web layer's collectors
(web/metrics.py) turn these into metric families only when Prometheus asks.

Under the GIL two threads adding to the same key at the same instant can lose one increment;
the values are for rates and alerts, not accounting, and they never go down.

Label values are the caller's to keep bounded: probe kinds, channel names, module names and
fixed reasons, never anything taken from a request.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

# seconds: a check or an engine tick of 5 ms to 10 s; slower ones land in +Inf
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Tally:
    """Counts by a label value (or a tuple of them)."""

    __slots__ = ("counts",)

    def __init__(self, keys: tuple[object, ...] = ()) -> None:
        # keys listed up front are exposed at 0 before the first event: a rate needs two points
        self.counts: dict[object, int] = dict.fromkeys(keys, 0)

    def add(self, key: object, n: int = 1) -> None:
        counts = self.counts
        counts[key] = counts.get(key, 0) + n

    def items(self) -> list[tuple[object, int]]:
        return list(self.counts.items())  # a copy: another thread may add a key meanwhile


class Histogram:
    """One histogram: the count per bucket (not cumulative), the sum and the count."""

    __slots__ = ("bounds", "buckets", "sum")

    def __init__(self, bounds: tuple[float, ...] = BUCKETS) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, so a value equal to a bound counts as `le` it
        self.buckets[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> Iterator[tuple[str, float]]:
        """(le, count) pairs as the exposition format wants them, ending with +Inf."""
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), list(self.buckets), strict=True):
            total += n
            yield ("+Inf" if bound == float("inf") else repr(bound)), float(total)


class Histograms:
    """A histogram per label value."""

    __slots__ = ("bounds", "by")

    def __init__(self, bounds: tuple[float, ...] = BUCKETS) -> None:
        self.bounds = bounds
        self.by: dict[str, Histogram] = {}

    def observe(self, key: str, value: float) -> None:
        hist = self.by.get(key)
        if hist is None:
            hist = self.by[key] = Histogram(self.bounds)
        hist.observe(value)

    def items(self) -> list[tuple[str, Histogram]]:
        return list(self.by.items())
