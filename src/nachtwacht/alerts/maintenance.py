"""Maintenance windows and silences: they mute paging but never recording.

Windows come from the config (one-off, or recurring such as `sun 02:00-04:00` in the site's
timezone) and from the store (added with `nachtwacht maintenance add`). Silences are ad hoc
mutes by probe, component or fingerprint, always with an end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, or_, select

from nachtwacht.alerts.models import RECURRING, Window
from nachtwacht.config.schema import Settings
from nachtwacht.store import tables as t

DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@dataclass(frozen=True)
class ActiveWindow:
    name: str
    starts_at: float
    ends_at: float
    components: tuple[str, ...]
    probes: tuple[str, ...]
    source: str  # config | store
    id: int | None = None

    def covers(self, probe: str | None, component: str | None) -> bool:
        if not self.components and not self.probes:
            return True  # the whole site
        return (probe is not None and probe in self.probes) or (
            component is not None and component in self.components
        )


def occurrence(window: Window, ts: float, settings: Settings) -> tuple[float, float] | None:
    """The (start, end) of the occurrence of `window` that contains `ts`, if any."""
    if window.every is None:
        assert window.start is not None and window.end is not None
        start = _aware(window.start, settings).timestamp()
        end = _aware(window.end, settings).timestamp()
        return (start, end) if start <= ts < end else None
    match = RECURRING.match(window.every)
    assert match is not None
    days_part = match.group(1)
    days = set(range(7)) if days_part == "daily" else {DAYS.index(d) for d in days_part.split(",")}
    sh, sm, eh, em = (int(match.group(i)) for i in (5, 6, 7, 8))
    zone = settings.zone
    local = datetime.fromtimestamp(ts, zone)
    # an occurrence containing ts started today or (if it runs past midnight) yesterday
    for back in (0, 1):
        day = (local - timedelta(days=back)).date()
        if day.weekday() not in days:
            continue
        opens = datetime(day.year, day.month, day.day, sh, sm, tzinfo=zone)
        end_day = day if (eh, em) > (sh, sm) else day + timedelta(days=1)
        closes = datetime(end_day.year, end_day.month, end_day.day, 0, 0, tzinfo=zone) + timedelta(
            hours=eh, minutes=em
        )
        if opens.timestamp() <= ts < closes.timestamp():
            return opens.timestamp(), closes.timestamp()
    return None


def _aware(dt: datetime, settings: Settings) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=settings.zone)


def active_windows(conn: Connection, settings: Settings, now: float) -> list[ActiveWindow]:
    out: list[ActiveWindow] = []
    for window in settings.maintenance:
        span = occurrence(window, now, settings)
        if span is not None:
            out.append(
                ActiveWindow(
                    window.name,
                    span[0],
                    span[1],
                    tuple(window.components),
                    tuple(window.probes),
                    "config",
                )
            )
    m = t.maintenance.c
    rows = conn.execute(
        select(t.maintenance).where(m.starts_at <= now, m.ends_at > now, m.ended_early_at.is_(None))
    ).mappings()
    for row in rows:
        out.append(
            ActiveWindow(
                row["name"],
                row["starts_at"],
                row["ends_at"],
                tuple(json.loads(row["components_json"] or "[]")),
                tuple(json.loads(row["probes_json"] or "[]")),
                "store",
                row["id"],
            )
        )
    return out


def active_silences(conn: Connection, now: float) -> list[dict[str, Any]]:
    s = t.silences.c
    rows = conn.execute(
        select(t.silences).where(
            s.starts_at <= now,
            s.ends_at > now,
            or_(s.expired_early_at.is_(None), s.expired_early_at > now),
        )
    ).mappings()
    return [dict(r) for r in rows]


def silence_matches(matcher: str, probe: str | None, component: str | None, fp: str) -> bool:
    kind, _, value = matcher.partition(":")
    if kind == "all":
        return True
    if kind == "probe":
        return probe == value
    if kind == "component":
        return component == value
    if kind == "fingerprint":
        return fp == value
    return False


def mute_reason(
    conn: Connection,
    settings: Settings,
    now: float,
    *,
    probe: str | None,
    component: str | None,
    fingerprint: str,
) -> str | None:
    """`maintenance:<name>` or `silence:<id>` when paging for this alert is muted now."""
    for window in active_windows(conn, settings, now):
        if window.covers(probe, component):
            return f"maintenance:{window.name}"
    for silence in active_silences(conn, now):
        if silence_matches(silence["matcher"], probe, component, fingerprint):
            return f"silence:{silence['id']}"
    return None


def alert_muted_by(
    conn: Connection, settings: Settings, alert: dict[str, Any], now: float
) -> str | None:
    """Why this firing alert's paging is muted now, or None: escalation's `Muter`.

    An inhibition holds while the probe that inhibits it is still firing; maintenance and
    silences are looked up afresh, so paging resumes the tick after they end.
    """
    if alert.get("drill_id") is not None:
        return None  # a drill tests the paging: nothing mutes it
    reason = alert["muted_by"] or ""
    if reason.startswith("inhibited:"):
        cause = conn.execute(
            select(t.alerts.c.id).where(
                t.alerts.c.fingerprint == f"probe:{reason.partition(':')[2]}",
                t.alerts.c.status == "firing",
            )
        ).first()
        if cause is not None:
            return reason
    probe = alert["fingerprint"].partition(":")[2] if alert["source"] == "probe" else None
    return mute_reason(
        conn,
        settings,
        now,
        probe=probe,
        component=alert["component"],
        fingerprint=alert["fingerprint"],
    )


__all__ = [
    "ActiveWindow",
    "active_silences",
    "active_windows",
    "alert_muted_by",
    "mute_reason",
    "occurrence",
]
