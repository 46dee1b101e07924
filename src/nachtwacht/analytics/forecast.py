"""Forecasts by least squares: when a disk fills up, and where latency and error rates are going.

Disk: Prometheus's `predict_linear` idea. Over the last `forecast.disk_window` of a host disk
probe's raw results (its value is the percentage used), fit a line to the free percentage
against time; where the line reaches 0 is when the disk is full. x is measured in hours from
now, so the intercept is the fitted free space now and the slope the change per hour.

Trends: per probe, the average latency and the share of failed checks per hour (from the
minute rollups, summed by their `hour` column), and the error tracker's events per hour (from
`error_issue_hours`), over `forecast.trend_window`, each fitted the same way.

Every answer carries its confidence: the number of points, the time they span, and R² (how much
of the variation the line explains). Too few points or too short a span gives "not enough data"
instead of a number.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, func, select

from nachtwacht.analytics.models import ForecastSettings
from nachtwacht.analytics.patterns import hourly_counts
from nachtwacht.analytics.stats import Fit, linear_fit, rounded
from nachtwacht.store import tables as t

HOUR = 3600.0
NOT_ENOUGH = "not enough data"


def confidence(fit: Fit | None, n: int, span_hours: float, cfg: ForecastSettings) -> dict[str, Any]:
    r2 = fit.r2 if fit is not None else None
    if fit is None or n < cfg.min_points or span_hours * HOUR < cfg.min_span:
        level = "none"
    elif fit.r2 < cfg.min_r2:
        level = "low"
    elif fit.r2 >= 0.8 and n >= 2 * cfg.min_points:
        level = "high"
    else:
        level = "medium"
    return {"level": level, "r2": rounded(r2, 4), "points": n, "span_hours": round(span_hours, 2)}


def _enough(n: int, span_hours: float, cfg: ForecastSettings) -> str | None:
    if n < cfg.min_points:
        return f"{NOT_ENOUGH}: {n} points, at least {cfg.min_points} needed"
    if span_hours * HOUR < cfg.min_span:
        return (
            f"{NOT_ENOUGH}: the points span {span_hours * 60:.0f} min, "
            f"at least {cfg.min_span / 60:.0f} min needed"
        )
    return None


# ---------------------------------------------------------------------------- disk


def disk_probes(conn: Connection) -> list[dict[str, Any]]:
    """Enabled host probes measuring a disk: id, name, component, mount."""
    p = t.probes.c
    rows = conn.execute(
        select(p.id, p.name, p.component, p.config_json)
        .where(p.kind == "host", p.enabled.is_(True))
        .order_by(p.name)
    ).all()
    found = []
    for row in rows:
        try:
            config = json.loads(row.config_json or "{}")
        except ValueError:
            continue
        if config.get("metric") == "disk":
            found.append(
                {
                    "id": row.id,
                    "name": row.name,
                    "component": row.component,
                    "mount": config.get("mount", "/"),
                }
            )
    return found


def disk_forecast(
    points: list[tuple[float, float]], now: float, cfg: ForecastSettings
) -> dict[str, Any]:
    """Hours until full from (ts, percent used) samples, with the fit's confidence."""
    xs = [(ts - now) / HOUR for ts, _ in points]
    free = [100.0 - used for _, used in points]
    span = (max(xs) - min(xs)) if xs else 0.0
    fit = linear_fit(xs, free)
    out: dict[str, Any] = {
        "used_percent": rounded(points[-1][1], 2) if points else None,
        "confidence": confidence(fit, len(points), span, cfg),
        "hours_to_full": None,
        "full_at": None,
        "fill_rate": None,  # percentage points of the disk per hour
    }
    reason = _enough(len(points), span, cfg)
    if reason is not None or fit is None:
        return out | {"status": "insufficient", "message": reason or NOT_ENOUGH}
    free_now = fit.intercept  # x = 0 is now
    out["fill_rate"] = rounded(-fit.slope, 4)
    out["free_percent"] = rounded(free_now, 2)
    if free_now <= 0:
        return out | {
            "status": "full",
            "hours_to_full": 0.0,
            "full_at": now,
            "message": "full now",
        }
    if fit.slope >= 0:
        return out | {"status": "stable", "message": "not filling up"}
    hours = free_now / -fit.slope
    return out | {
        "status": "filling",
        "hours_to_full": round(hours, 2),
        "full_at": now + hours * HOUR,
        "message": f"full in {hours:.1f} h at {-fit.slope:.3f} points per hour",
    }


def disk_forecasts(conn: Connection, now: float, cfg: ForecastSettings) -> list[dict[str, Any]]:
    probes = disk_probes(conn)
    if not probes:
        return []
    r = t.results.c
    samples: dict[int, list[tuple[float, float]]] = defaultdict(list)
    query = (
        select(r.probe_id, r.ts, r.value)
        .where(
            r.probe_id.in_([p["id"] for p in probes]),
            r.ts >= now - cfg.disk_window,
            r.ts <= now,
            r.value.is_not(None),
        )
        .order_by(r.probe_id, r.ts)
    )
    for probe_id, ts, value in conn.execute(query):
        samples[int(probe_id)].append((float(ts), float(value)))
    return [p | disk_forecast(samples.get(p["id"], []), now, cfg) for p in probes]


# ---------------------------------------------------------------------------- trends


def _direction(change: float, threshold: float) -> str:
    if change > threshold:
        return "rising"
    if change < -threshold:
        return "falling"
    return "stable"


def series_trend(
    points: list[tuple[float, float]],
    now: float,
    cfg: ForecastSettings,
    threshold: float | None = None,
) -> dict[str, Any]:
    """A trend over (ts, value) points: slope per hour, change across the window, direction.

    `threshold` is the absolute change across the window that counts as rising/falling; by
    default `trend_change` × the mean.
    """
    xs = [(ts - now) / HOUR for ts, _ in points]
    ys = [v for _, v in points]
    span = (max(xs) - min(xs)) if xs else 0.0
    fit = linear_fit(xs, ys)
    out: dict[str, Any] = {"confidence": confidence(fit, len(points), span, cfg)}
    reason = _enough(len(points), span, cfg)
    if reason is not None or fit is None:
        return out | {"direction": "unknown", "message": reason or NOT_ENOUGH}
    mean = sum(ys) / len(ys)
    change = fit.slope * span
    limit = threshold if threshold is not None else cfg.trend_change * abs(mean)
    # a line that explains less than min_r2 of the variation is noise, not a direction
    trusted = fit.r2 >= cfg.min_r2
    direction = _direction(change, limit) if limit > 0 and trusted else "stable"
    return out | {
        "direction": direction,
        "slope_per_hour": rounded(fit.slope, 4),
        "change": rounded(change, 3),  # fitted end minus fitted start of the window
        "mean": rounded(mean, 3),
        "now": rounded(fit.intercept, 3),
        "in_24h": rounded(max(0.0, fit.at(24.0)), 3),
    }


def probe_trends(conn: Connection, now: float, cfg: ForecastSettings) -> list[dict[str, Any]]:
    """Latency and failure-rate trends of every enabled probe with rollups in the window."""
    m, p = t.rollup_minute.c, t.probes.c
    first_hour = int((now - cfg.trend_window) // HOUR)
    query = (
        select(
            m.probe_id,
            m.hour,
            func.sum(m.n),
            func.sum(m.n_ok),
            func.sum(m.latency_sum),
        )
        .where(m.hour >= first_hour, m.hour <= int(now // HOUR))
        .group_by(m.probe_id, m.hour)
    )
    latency: dict[int, list[tuple[float, float]]] = defaultdict(list)
    failures: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for probe_id, hour, n, n_ok, lat_sum in conn.execute(query):
        n = int(n or 0)
        if not n:
            continue
        middle = int(hour) * HOUR + HOUR / 2
        failures[int(probe_id)].append((middle, 100.0 * (n - int(n_ok or 0)) / n))
        if lat_sum is not None:
            latency[int(probe_id)].append((middle, float(lat_sum) / n))
    if not failures:
        return []
    names = {
        row.id: (row.name, row.component, row.kind)
        for row in conn.execute(
            select(p.id, p.name, p.component, p.kind).where(
                p.id.in_(list(failures)), p.enabled.is_(True)
            )
        )
    }
    out = []
    for probe_id in sorted(names, key=lambda k: names[k][0]):
        name, component, kind = names[probe_id]
        lat = sorted(latency.get(probe_id, []))
        fail = sorted(failures[probe_id])
        out.append(
            {
                "probe": name,
                "component": component,
                "kind": kind,
                "latency_ms": series_trend(lat, now, cfg) if lat else None,
                "failure_percent": series_trend(fail, now, cfg, threshold=cfg.failure_points),
            }
        )
    return out


def error_rate_trend(conn: Connection, now: float, cfg: ForecastSettings) -> dict[str, Any]:
    """Error events per hour over the trend window, with the events expected in the next 24 h."""
    last = int(now // HOUR)
    first = int((now - cfg.trend_window) // HOUR)
    # hours before any project could report are not zero errors but no data: the window
    # starts at the first whole hour after the first project was added
    started = conn.execute(select(func.min(t.error_projects.c.created_at))).scalar()
    if started is None:
        return series_trend([], now, cfg)
    first = max(first, int(started // HOUR) + 1)
    if first > last - 1:
        return series_trend([], now, cfg)
    # the current hour is incomplete: counting it would always bend the line down
    counts = hourly_counts(conn, first, last - 1)
    points = [((first + k) * HOUR + HOUR / 2, float(n)) for k, n in enumerate(counts)]
    trend = series_trend(points, now, cfg)
    fit_now = trend.get("now")
    slope = trend.get("slope_per_hour")
    if fit_now is not None and slope is not None:
        # the integral of the fitted line over the next 24 h, counts never below zero
        trend["next_24h"] = round(sum(max(0.0, fit_now + slope * (h + 0.5)) for h in range(24)))
    return trend


def forecast(conn: Connection, now: float, cfg: ForecastSettings) -> dict[str, Any]:
    return {
        "generated_at": now,
        "disk": disk_forecasts(conn, now, cfg),
        "probes": probe_trends(conn, now, cfg),
        "errors": error_rate_trend(conn, now, cfg),
        "settings": {
            "disk_window": cfg.disk_window,
            "trend_window": cfg.trend_window,
            "min_points": cfg.min_points,
            "min_r2": cfg.min_r2,
        },
    }
