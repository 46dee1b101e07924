"""The few statistics analytics need, in plain Python: a least-squares line, robust z-scores and
percentiles. The series are small (a few hundred points), so numpy would only add a dependency."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MAD_TO_SIGMA = 1.4826  # MAD × this estimates the standard deviation of normal data


@dataclass(frozen=True)
class Fit:
    """y = intercept + slope · x by ordinary least squares."""

    slope: float
    intercept: float
    r2: float  # share of the variance the line explains (1.0 for a flat series on the line)
    n: int

    def at(self, x: float) -> float:
        return self.intercept + self.slope * x


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> Fit | None:
    """The least-squares line through the points; None with fewer than two distinct xs."""
    n = len(xs)
    if n < 2 or n != len(ys):
        return None
    mx = math.fsum(xs) / n
    my = math.fsum(ys) / n
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    sxy = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    syy = math.fsum((y - my) ** 2 for y in ys)
    slope = sxy / sxx
    intercept = my - slope * mx
    # a constant series is perfectly described by its (flat) line
    r2 = 1.0 if syy == 0 else max(0.0, min(1.0, sxy * sxy / (sxx * syy)))
    return Fit(slope, intercept, r2, n)


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("median of nothing")
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def robust_scale(values: Sequence[float]) -> tuple[float, float]:
    """(median, scale): scale is 1.4826 × MAD, floored at √median and at 1.

    Hourly error counts are mostly small integers: the MAD of a quiet series is often 0, which
    would make every single extra error "infinitely" unusual. Counts are Poisson-like, so √median
    is the noise one expects anyway, and 1 is the smallest step a count can take.
    """
    med = median(values)
    mad = median([abs(v - med) for v in values])
    return med, max(MAD_TO_SIGMA * mad, math.sqrt(max(med, 0.0)), 1.0)


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) of sorted values, linearly interpolated (numpy's default)."""
    if not ordered:
        return None
    if len(ordered) == 1:
        return float(ordered[0])
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def rounded(value: float | None, digits: int = 3) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)
