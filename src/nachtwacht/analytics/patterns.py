"""Error patterns over a window of days, from the per-issue hourly counts the error tracker keeps.

Everything is computed from `error_issue_hours` (issue, epoch hour, count) and `error_issues`:
SQL sums by hour and by issue (integer columns, the same on every backend), Python does the
timezone and the statistics on at most `days × 24` buckets.

The window is the last `days × 24` epoch hours, the current (partial) hour included, so the
newest errors always count. "Days" are consecutive 24-hour blocks ending with the current hour,
not calendar days: every point of the daily trend then covers the same length of time, and a
half-finished today cannot pass for a falling trend.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Select, func, select

from nachtwacht.analytics.models import PatternSettings
from nachtwacht.analytics.stats import linear_fit, robust_scale, rounded
from nachtwacht.config.schema import BusinessHours
from nachtwacht.incidents.sla import BusinessCalendar
from nachtwacht.store import tables as t

HOUR = 3600
MAX_DAYS = 90
UNCATEGORISED = "uncategorised"


def window_hours(now: float, days: int) -> tuple[int, int]:
    """(first, last) epoch hour of the window, both included; `last` is the current hour."""
    last = int(now // HOUR)
    return last - days * 24 + 1, last


def _filtered(query: Select, environments: Sequence[str] | None, project_id: int | None) -> Select:
    i = t.error_issues.c
    if environments or project_id is not None:
        query = query.join(t.error_issues, i.id == t.error_issue_hours.c.issue_id)
    if environments:
        query = query.where(i.environment.in_(list(environments)))
    if project_id is not None:
        query = query.where(i.project_id == project_id)
    return query


def hourly_counts(
    conn: Connection,
    first: int,
    last: int,
    environments: Sequence[str] | None = None,
    project_id: int | None = None,
) -> list[int]:
    """Events per epoch hour from `first` to `last` (both included), zeros filled in."""
    h = t.error_issue_hours.c
    query = select(h.hour, func.sum(h.n)).where(h.hour >= first, h.hour <= last).group_by(h.hour)
    counts = [0] * (last - first + 1)
    for hour, n in conn.execute(_filtered(query, environments, project_id)):
        counts[int(hour) - first] = int(n or 0)
    return counts


def spikes_in(
    counts: Sequence[int], first: int, z_threshold: float, min_count: int, zone: ZoneInfo
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Hours whose robust z-score against the series' median and MAD exceeds the threshold."""
    if not counts:
        return [], {"median": 0.0, "scale": 1.0}
    med, scale = robust_scale(counts)
    found = []
    for offset, n in enumerate(counts):
        z = (n - med) / scale
        if z > z_threshold and n >= min_count:
            start = (first + offset) * HOUR
            found.append(
                {
                    "hour": start,
                    "local": datetime.fromtimestamp(start, zone).isoformat(),
                    "count": n,
                    "z": round(z, 2),
                    "median": med,
                }
            )
    return found, {"median": med, "scale": round(scale, 3)}


def _trend(daily: list[int], threshold: float, min_days: int = 1) -> dict[str, Any]:
    """The least-squares trend through `daily`, the days with data (oldest first).

    Fewer than `min_days` days are no trend: one busy day after six days nobody could report
    errors in is not "rising". The answer then says how many days it needs and has.
    """
    have = {"days": len(daily), "min_days": min_days}
    mean = sum(daily) / len(daily) if daily else 0.0
    if len(daily) < min_days:
        return {
            "direction": "unknown",
            "slope": None,
            "mean": rounded(mean, 3),
            "relative": None,
            "r2": None,
            "threshold": threshold,
            "message": f"not enough data: a trend needs {min_days} days of data, "
            f"there {'is' if len(daily) == 1 else 'are'} {len(daily)}",
            **have,
        }
    fit = linear_fit([float(i) for i in range(len(daily))], [float(n) for n in daily])
    if fit is None or mean == 0:
        return {
            "direction": "stable",
            "slope": 0.0,
            "mean": mean,
            "relative": 0.0,
            "r2": None,
            **have,
        }
    relative = fit.slope / mean
    direction = "stable"
    if relative > threshold:
        direction = "rising"
    elif relative < -threshold:
        direction = "falling"
    return {
        "direction": direction,
        "slope": rounded(fit.slope, 4),  # events per day, per day
        "mean": rounded(mean, 3),
        "relative": rounded(relative, 4),  # slope as a share of the daily mean
        "r2": rounded(fit.r2, 4),
        "threshold": threshold,
        **have,
    }


def days_with_data(conn: Connection, first: int, days: int, project_id: int | None = None) -> int:
    """How many of the window's days (the newest ones) fall after the first project (or
    `project_id`) could report: the days before are no data, not zero errors."""
    p = t.error_projects.c
    query = select(func.min(p.created_at))
    if project_id is not None:
        query = query.where(p.id == project_id)
    started = conn.execute(query).scalar()
    if started is None:
        return 0
    return sum(1 for d in range(days) if (first + d * 24) * HOUR >= started)


def _growth(counts: list[int], threshold: float) -> dict[str, Any]:
    half = len(counts) // 2
    first, second = sum(counts[:half]), sum(counts[half:])
    if first == 0:
        return {
            "first_half": first,
            "second_half": second,
            "growth": None,
            "direction": "new" if second else "none",
        }
    growth = (second - first) / first
    direction = "steady"
    if growth > threshold:
        direction = "growing"
    elif growth < -threshold:
        direction = "shrinking"
    return {
        "first_half": first,
        "second_half": second,
        "growth": round(growth, 4),
        "direction": direction,
    }


def _hours_of_day(
    counts: list[int], first: int, zone: ZoneInfo, calendar: BusinessCalendar
) -> dict[str, Any]:
    by_hour = [0] * 24
    business = off = 0
    business_hours = off_hours = 0
    for offset, n in enumerate(counts):
        # the middle of the bucket: right for whole-hour offsets, and for +05:30 zones too
        middle = (first + offset) * HOUR + HOUR / 2
        by_hour[datetime.fromtimestamp(middle, zone).hour] += n
        if calendar.in_business_hours(middle):
            business += n
            business_hours += 1
        else:
            off += n
            off_hours += 1
    total = business + off
    peak = max(range(24), key=lambda h: (by_hour[h], -h)) if total else None
    return {
        "by_hour": by_hour,
        "peak_hour": peak,
        "peak_count": by_hour[peak] if peak is not None else 0,
        "business": business,
        "off_hours": off,
        "business_share": round(business / total, 4) if total else None,
        # per hour, because a week has 40 business hours and 128 others
        "business_per_hour": round(business / business_hours, 3) if business_hours else None,
        "off_hours_per_hour": round(off / off_hours, 3) if off_hours else None,
    }


def _issue_rows(
    conn: Connection, first: int, last: int, envs: Sequence[str] | None, project_id: int | None
) -> dict[int, dict[str, Any]]:
    """Per issue seen in the window: its count there, category, level, environment."""
    h, i = t.error_issue_hours.c, t.error_issues.c
    query = (
        select(h.issue_id, i.category, i.level, i.environment, func.sum(h.n))
        .join(t.error_issues, i.id == h.issue_id)
        .where(h.hour >= first, h.hour <= last)
        .group_by(h.issue_id, i.category, i.level, i.environment)
    )
    if envs:
        query = query.where(i.environment.in_(list(envs)))
    if project_id is not None:
        query = query.where(i.project_id == project_id)
    return {
        int(issue_id): {"category": cat, "level": level, "environment": env, "count": int(n or 0)}
        for issue_id, cat, level, env, n in conn.execute(query)
    }


def _days_seen(conn: Connection, first: int, last: int, ids: list[int]) -> dict[int, int]:
    """Distinct 24-hour blocks of the window in which each issue had events."""
    h = t.error_issue_hours.c
    block = ((h.hour - first) // 24).label("block")
    seen: dict[int, set[int]] = defaultdict(set)
    for chunk_start in range(0, len(ids), 500):  # IN lists stay within every driver's limits
        chunk = ids[chunk_start : chunk_start + 500]
        query = (
            select(h.issue_id, block)
            .where(h.hour >= first, h.hour <= last, h.issue_id.in_(chunk), h.n > 0)
            .group_by(h.issue_id, block)
        )
        for issue_id, b in conn.execute(query):
            seen[int(issue_id)].add(int(b))
    return {k: len(v) for k, v in seen.items()}


def _details(conn: Connection, ids: list[int]) -> dict[int, dict[str, Any]]:
    if not ids:
        return {}
    i = t.error_issues.c
    cols = [
        i.id,
        i.project_id,
        i.title,
        i.level,
        i.category,
        i.status,
        i.environment,
        i.first_seen,
        i.last_seen,
        i.count,
    ]
    rows = conn.execute(select(*cols).where(i.id.in_(ids))).mappings()
    return {int(r["id"]): dict(r) for r in rows}


def _issue_view(
    detail: dict[str, Any], window_count: int, days_seen: int, zone: ZoneInfo
) -> dict[str, Any]:
    return {
        "id": detail["id"],
        "project_id": detail["project_id"],
        "title": detail["title"],
        "level": detail["level"],
        "category": detail["category"] or UNCATEGORISED,
        "status": detail["status"],
        "environment": detail["environment"],
        "count": window_count,
        "total": detail["count"],
        "days_seen": days_seen,
        "first_seen": detail["first_seen"],
        "last_seen": detail["last_seen"],
        "first_seen_local": datetime.fromtimestamp(detail["first_seen"], zone).isoformat(),
    }


def analyze_error_patterns(
    conn: Connection,
    now: float,
    days: int,
    zone: ZoneInfo,
    business_hours: BusinessHours,
    cfg: PatternSettings | None = None,
    environments: Sequence[str] | None = None,
    project_id: int | None = None,
) -> dict[str, Any]:
    """Totals, daily trend, hours of the day, categories, top/new/recurring issues, growth and
    spikes of the error events of the last `days` days. The keys are documented in
    docs/analytics.md."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}")
    cfg = cfg or PatternSettings()
    first, last = window_hours(now, days)
    counts = hourly_counts(conn, first, last, environments, project_id)
    daily = [sum(counts[d * 24 : (d + 1) * 24]) for d in range(days)]
    with_data = days_with_data(conn, first, days, project_id)
    issues = _issue_rows(conn, first, last, environments, project_id)
    total = sum(counts)

    categories: dict[str, int] = defaultdict(int)
    levels: dict[str, int] = defaultdict(int)
    envs: dict[str, int] = defaultdict(int)
    for row in issues.values():
        categories[row["category"] or UNCATEGORISED] += row["count"]
        levels[row["level"] or "error"] += row["count"]
        envs[row["environment"] or "(none)"] += row["count"]

    ids = list(issues)
    days_seen = _days_seen(conn, first, last, ids)
    by_count = sorted(ids, key=lambda k: (-issues[k]["count"], k))
    top_ids = by_count[: cfg.top]
    recurring_ids = sorted(
        (k for k in ids if days_seen.get(k, 0) >= cfg.recurring_days),
        key=lambda k: (-days_seen[k], -issues[k]["count"], k),
    )
    window_start = first * HOUR
    i = t.error_issues.c
    new_query = select(i.id).where(i.first_seen >= window_start, i.first_seen <= now)
    if environments:
        new_query = new_query.where(i.environment.in_(list(environments)))
    if project_id is not None:
        new_query = new_query.where(i.project_id == project_id)
    new_count = conn.execute(select(func.count()).select_from(new_query.subquery())).scalar_one()
    new_ids = [
        int(r[0])
        for r in conn.execute(new_query.order_by(i.first_seen.desc(), i.id.desc()).limit(cfg.top))
    ]
    details = _details(conn, sorted(set(top_ids) | set(recurring_ids[: cfg.top]) | set(new_ids)))

    def views(chosen: list[int]) -> list[dict[str, Any]]:
        return [
            _issue_view(details[k], issues.get(k, {}).get("count", 0), days_seen.get(k, 0), zone)
            for k in chosen
            if k in details
        ]

    spikes, baseline = spikes_in(counts, first, cfg.spike_z, cfg.spike_min_count, zone)
    day_starts = [(first + d * 24) * HOUR for d in range(days)]
    return {
        "days": days,
        "window": {"start": window_start, "end": now, "hours": len(counts)},
        "timezone": str(zone.key),
        "environments": list(environments) if environments else None,
        "totals": {
            "events": total,
            "issues": len(issues),
            "new_issues": int(new_count),
            "recurring_issues": len(recurring_ids),
            "per_day": round(total / days, 3),
        },
        "daily": [
            {
                "start": start,
                "date": datetime.fromtimestamp(start, zone).date().isoformat(),
                "count": n,
            }
            for start, n in zip(day_starts, daily, strict=True)
        ],
        # the line through the days with data only (the chart draws it over those)
        "trend": _trend(daily[days - with_data :], cfg.trend_threshold, cfg.trend_min_days)
        | {"first_day": days - with_data},
        "hourly": _hours_of_day(counts, first, zone, BusinessCalendar(business_hours, zone)),
        "categories": dict(sorted(categories.items(), key=lambda kv: (-kv[1], kv[0]))),
        "levels": dict(sorted(levels.items(), key=lambda kv: (-kv[1], kv[0]))),
        "by_environment": dict(sorted(envs.items(), key=lambda kv: (-kv[1], kv[0]))),
        "top_issues": views(top_ids),
        "new_issues": views(new_ids),
        "recurring_issues": views(recurring_ids[: cfg.top]),
        "growth": _growth(counts, cfg.growth_threshold),
        "spikes": spikes,
        "spike_baseline": {**baseline, "threshold": cfg.spike_z, "min_count": cfg.spike_min_count},
        "series": {"first_hour": first, "counts": counts},
    }
