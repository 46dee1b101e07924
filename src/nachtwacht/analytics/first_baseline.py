"""The first baseline, taken by itself once the system has been healthy long enough.

A fresh install cannot resolve an S1/S2 until it has a performance baseline to compare with
(the restoration checklist's performance item); nobody reads the quick start that far at 3 a.m.
So the engine takes the first one (`analytics.baseline.auto_after`, 24 h by default) once there
are results that old and no incident or alert in that time; later baselines are taken on
purpose, by a person, after the system is known to be right again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, or_, select

from nachtwacht.analytics.baselines import capture
from nachtwacht.analytics.models import BaselineSettings
from nachtwacht.store import tables as t

AUTO_ACTOR = "nachtwacht"


def has_baseline(conn: Connection) -> bool:
    return conn.execute(select(t.baselines.c.id).limit(1)).first() is not None


def no_baseline_yet(cfg: BaselineSettings) -> str:
    """What to do while there is no baseline (the restoration checklist says it)."""
    by_hand = "run `nachtwacht baseline capture`"
    if cfg.auto_after is None:
        return f"no baseline yet: {by_hand} once the system runs as it should"
    hours = f"{cfg.auto_after / 3600:g} h"
    return (
        f"no baseline yet: one is captured automatically after {hours} of healthy operation "
        f"(no incident, no alert), or {by_hand}"
    )


def healthy_for(conn: Connection, now: float, length: float) -> bool:
    """Running for `length` (results that old) with no incident and no alert in that time."""
    start = now - length
    r, i, a = t.results.c, t.incidents.c, t.alerts.c
    if conn.execute(select(r.ts).where(r.ts <= start).limit(1)).first() is None:
        return False  # not running that long yet
    incident = conn.execute(
        select(i.id)
        .where(or_(i.resolved_at.is_(None), i.resolved_at > start), i.drill_id.is_(None))
        .limit(1)
    ).first()
    alert = conn.execute(
        select(a.id)
        .where(
            or_(a.status == "firing", a.resolved_at.is_(None), a.resolved_at > start),
            a.drill_id.is_(None),
        )
        .limit(1)
    ).first()
    return incident is None and alert is None


def capture_first(conn: Connection, now: float, cfg: BaselineSettings) -> dict[str, Any] | None:
    """The first baseline, once the system has been healthy for `auto_after`; None until then
    (or when there is a baseline already: later ones are taken on purpose, after incidents)."""
    if cfg.auto_after is None or has_baseline(conn):
        return None
    if not healthy_for(conn, now, cfg.auto_after):
        return None
    hours = f"{cfg.auto_after / 3600:g} h"
    return capture(conn, now, cfg.auto_after, AUTO_ACTOR, f"first baseline ({hours} healthy)")
