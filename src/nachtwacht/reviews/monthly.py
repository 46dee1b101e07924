"""The monthly report: the protocol's "Monthly Reviews" in figures.

For a calendar month in site time, counting the incidents *detected* in it (drills left out:
they have their own reports, docs/drills.md):

- incidents by severity;
- mean time to acknowledge (acknowledged − detected, over those acknowledged) and to resolve
  (resolved − detected, over those resolved), overall and per severity;
- SLA compliance: acknowledged or resolved by the response target, over the incidents whose
  response is decided (acknowledged, resolved, or past due / breached); those still waiting
  inside their target are left out;
- uptime per component: OK results over all results of its probes, from the rollups (hours
  rolled up, the minutes after the hour watermark), as probes/uptime.py counts them;
- the top error issues by events in the month (error_issue_hours);
- follow-ups open now, with those overdue marked.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime
from statistics import fmean
from typing import Any

from sqlalchemy import Connection, func, select

from nachtwacht.backup import restoretest
from nachtwacht.config.schema import Settings
from nachtwacht.probes.uptime import hour_sums, watermarks
from nachtwacht.reviews import followups
from nachtwacht.reviews.postmortem import sla_met
from nachtwacht.reviews.service import month_bounds
from nachtwacht.store import tables as t

TOP_ISSUES = 10


def _mean(values: list[float]) -> float | None:
    return round(fmean(values), 3) if values else None


def incident_figures(rows: list[dict[str, Any]], now: float) -> dict[str, Any]:
    acks = [r["acknowledged_at"] - r["detected_at"] for r in rows if r["acknowledged_at"]]
    fixes = [r["resolved_at"] - r["detected_at"] for r in rows if r["resolved_at"]]
    decided = [m for m in (sla_met(r, now) for r in rows) if m is not None]
    return {
        "count": len(rows),
        "acknowledged": len(acks),
        "resolved": len(fixes),
        "mtta": _mean(acks),
        "mttr": _mean(fixes),
        "sla_decided": len(decided),
        "sla_met": sum(decided),
        "sla_compliance": round(sum(decided) / len(decided), 4) if decided else None,
    }


def _minute_sums(conn: Connection, first: int, end: int) -> dict[int, tuple[int, int]]:
    m = t.rollup_minute.c
    query = (
        select(m.probe_id, func.sum(m.n), func.sum(m.n_ok))
        .where(m.bucket >= first, m.bucket < end)
        .group_by(m.probe_id)
    )
    return {int(p): (int(n or 0), int(ok or 0)) for p, n, ok in conn.execute(query)}


def uptime_by_component(
    conn: Connection, start: float, end: float, now: float
) -> list[dict[str, Any]]:
    stop = min(end, now)
    first_hour, last_hour = int(start // 3600), math.ceil(stop / 3600)
    hour_mark, _ = watermarks(conn)
    split = hour_mark if hour_mark is not None else int(now // 3600)
    split = max(first_hour, min(split, last_hour))
    hours = hour_sums(conn, first_hour, split)
    minutes = _minute_sums(conn, max(split * 60, int(start // 60)), math.ceil(stop / 60))
    comps: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for pid, component in conn.execute(select(t.probes.c.id, t.probes.c.component)):
        n_h, ok_h = hours.get(pid, (0, 0))
        n_m, ok_m = minutes.get(pid, (0, 0))
        entry = comps[component]
        entry[0] += n_h + n_m
        entry[1] += ok_h + ok_m
        entry[2] += 1
    return [
        {
            "component": name,
            "probes": probes,
            "results": n,
            "ok": ok,
            "uptime": round(ok / n, 6) if n else None,
        }
        for name, (n, ok, probes) in sorted(comps.items())
    ]


def top_issues(conn: Connection, start: float, end: float) -> list[dict[str, Any]]:
    h, i = t.error_issue_hours.c, t.error_issues.c
    events = func.sum(h.n).label("events")
    query = (
        select(i.id, i.title, i.level, i.status, i.category, i.project_id, events)
        .join(t.error_issues, i.id == h.issue_id)
        .where(h.hour >= int(start // 3600), h.hour < int(end // 3600))
        .group_by(i.id, i.title, i.level, i.status, i.category, i.project_id)
        .order_by(events.desc(), i.id)
        .limit(TOP_ISSUES)
    )
    return [dict(r) | {"events": int(r.events)} for r in conn.execute(query).mappings()]


def restore_tests(conn: Connection, start: float, end: float) -> dict[str, Any]:
    """The month's restore tests (backup/restoretest.py): how many, how many passed, the last."""
    tests = restoretest.in_range(conn, start, end)
    last = tests[-1] if tests else None
    return {
        "count": len(tests),
        "passed": sum(1 for x in tests if x["ok"]),
        "last": (
            {k: last[k] for k in ("finished_at", "backup", "ok", "rows", "summary")}
            if last
            else None
        ),
    }


def restore_line(figures: dict[str, Any]) -> str:
    """`restore tests: 1 of 1 passed; last ...`, the report's line."""
    if not figures["count"]:
        return "restore tests: none this month"
    last = figures["last"]
    return (
        f"restore tests: {figures['passed']} of {figures['count']} passed; last "
        f"{'passed' if last['ok'] else 'FAILED'}: {last['summary']}"
    )


def report(conn: Connection, settings: Settings, month: str | None, now: float) -> dict[str, Any]:
    label, start, end = month_bounds(month, now, settings.zone)
    c = t.incidents.c
    rows = [
        dict(r)
        for r in conn.execute(
            select(t.incidents)
            .where(c.detected_at >= start, c.detected_at < end, c.drill_id.is_(None))
            .order_by(c.id)
        ).mappings()
    ]
    severities = {
        str(s): incident_figures([r for r in rows if r["severity"] == s], now) for s in (1, 2, 3)
    }
    return {
        "month": label,
        "site": settings.site,
        "timezone": settings.timezone,
        "start": datetime.fromtimestamp(start, settings.zone).isoformat(),
        "end": datetime.fromtimestamp(end, settings.zone).isoformat(),
        "incidents": incident_figures(rows, now),
        "by_severity": severities,
        "incident_list": [
            {
                "id": r["id"],
                "title": r["title"],
                "severity": r["severity"],
                "status": r["status"],
                "detected_at": r["detected_at"],
                "time_to_acknowledge": (
                    r["acknowledged_at"] - r["detected_at"] if r["acknowledged_at"] else None
                ),
                "time_to_resolve": r["resolved_at"] - r["detected_at"]
                if r["resolved_at"]
                else None,
                "sla_met": sla_met(r, now),
            }
            for r in rows
        ],
        "uptime": uptime_by_component(conn, start, end, now),
        "top_issues": top_issues(conn, start, end),
        "open_followups": followups.list_followups(conn, now, "open"),
        "restore_tests": restore_tests(conn, start, end),
    }


def history(
    conn: Connection, settings: Settings, month: str | None, now: float, months: int = 6
) -> list[dict[str, Any]]:
    """The headline figures of `months` months up to `month`, oldest first (for the charts)."""
    label, start, _ = month_bounds(month, now, settings.zone)
    year, number = (int(p) for p in label.split("-"))
    out = []
    for back in range(months - 1, -1, -1):
        y, m = divmod((year * 12 + number - 1) - back, 12)
        name, a, b = month_bounds(f"{y:04d}-{m + 1:02d}", now, settings.zone)
        c = t.incidents.c
        rows = [
            dict(r)
            for r in conn.execute(
                select(t.incidents).where(
                    c.detected_at >= a, c.detected_at < b, c.drill_id.is_(None)
                )
            ).mappings()
        ]
        out.append({"month": name, **incident_figures(rows, now)})
    return out
