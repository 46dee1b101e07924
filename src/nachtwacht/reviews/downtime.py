"""Downtime per component during a time window, from the probes' recorded state changes.

A probe is *down* while its confirmed state is critical. The down time starts at the first
failing result of that run of failures (`first_failure` of the change into critical), not at
the later confirmation, because the failure began then; it ends at the change out of critical.
Warning, pending and unknown do not count as down. Every interval is clipped to the window.

A component is down while any of its probes is down: its downtime is the union of its probes'
intervals, so two probes failing together count once.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, func, select

from nachtwacht.store import tables as t

Interval = tuple[float, float]


def _merge(intervals: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def probe_intervals(conn: Connection, start: float, end: float) -> dict[int, list[Interval]]:
    """probe id → the intervals it was critical within [start, end)."""
    sc = t.state_changes.c
    # the state each probe was in when the window opened: its last change before it
    last_before = (
        select(sc.probe_id, func.max(sc.ts).label("ts"))
        .where(sc.ts < start)
        .group_by(sc.probe_id)
        .subquery()
    )
    opening = conn.execute(
        select(sc.probe_id, sc.to_state).join(
            last_before, (sc.probe_id == last_before.c.probe_id) & (sc.ts == last_before.c.ts)
        )
    ).all()
    down_since: dict[int, float] = {}
    for probe_id, state in opening:
        if state == "critical":
            down_since[probe_id] = start
    changes = conn.execute(
        select(sc.probe_id, sc.ts, sc.to_state, sc.first_failure)
        .where(sc.ts >= start, sc.ts < end)
        .order_by(sc.ts, sc.id)
    ).all()
    out: dict[int, list[Interval]] = defaultdict(list)
    for probe_id, ts, to_state, first_failure in changes:
        if to_state == "critical":
            if probe_id not in down_since:
                began = first_failure if first_failure is not None and first_failure < ts else ts
                down_since[probe_id] = max(began, start)
        elif probe_id in down_since:
            out[probe_id].append((down_since.pop(probe_id), ts))
    for probe_id, since in down_since.items():
        out[probe_id].append((since, end))
    return {pid: _merge(iv) for pid, iv in out.items() if iv}


def downtime(
    conn: Connection, start: float, end: float, components: list[str] | None = None
) -> list[dict[str, Any]]:
    """Per component: seconds down in [start, end) and each down probe's seconds.

    `components` are always listed (with 0 s when nothing was down); others only when down.
    """
    if end <= start:
        end = start
    intervals = probe_intervals(conn, start, end)
    probes = {
        pid: (name, component)
        for pid, name, component in conn.execute(
            select(t.probes.c.id, t.probes.c.name, t.probes.c.component)
        )
    }
    by_component: dict[str, list[tuple[str, list[Interval]]]] = defaultdict(list)
    for pid, iv in intervals.items():
        name, component = probes.get(pid, (f"probe {pid}", "unknown"))
        by_component[component].append((name, iv))
    for name in components or []:
        by_component.setdefault(name, [])
    out = []
    for component in sorted(by_component):
        merged = _merge([i for _, iv in by_component[component] for i in iv])
        out.append(
            {
                "component": component,
                "seconds": round(sum(b - a for a, b in merged), 3),
                "intervals": merged,
                "probes": [
                    {"probe": name, "seconds": round(sum(b - a for a, b in iv), 3)}
                    for name, iv in sorted(by_component[component])
                ],
            }
        )
    return out
