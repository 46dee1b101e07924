"""What the public page shows, built from public facts only, and cached.

- Components: each public component's state is the worst of its probes' states, in public
  words (operational, degraded, partial outage, major outage) or "maintenance" while a window
  covers it. Probe names, targets and messages are read nowhere here.
- Incidents: those with a published notice; title, status and words come from the notices
  only, never from the incident row (its title and impact are internal).
- Maintenance: windows in force or starting within `maintenance_ahead` that touch a public
  component, shown as "Scheduled maintenance" with their times: a window's name and comment
  are internal notes.
- Uptime: one bar per day for `history_days`, from `rollup_hour` grouped by component and
  hour (one query), summed into days of the site's timezone.

The whole view is cached for `cache_for` seconds and the uptime part until the next hour, so
an anonymous crowd costs one build per few seconds, not one per request.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from nachtwacht.alerts.windows import list_windows
from nachtwacht.config.schema import Settings
from nachtwacht.statuspage.service import notice_view, title
from nachtwacht.store import tables as t

# worst first: the order a component's probes are folded in
ALL_OK = "All systems operational"
INCIDENT_LABEL = "Ongoing incident: see below"
RANK = {"major_outage": 4, "partial_outage": 3, "degraded": 2, "maintenance": 1, "operational": 0}
LABELS = {
    "operational": "Operational",
    "degraded": "Degraded performance",
    "partial_outage": "Partial outage",
    "major_outage": "Major outage",
    "maintenance": "Under maintenance",
}
FAILING = ("critical",)
WEAK = ("warning", "degraded")


def _component_state(states: list[str], in_maintenance: bool) -> str:
    known = [s for s in states if s in ("ok", *FAILING, *WEAK)]
    failing = [s for s in known if s in FAILING]
    if failing:
        state = "major_outage" if len(failing) == len(known) else "partial_outage"
    elif any(s in WEAK for s in known):
        state = "degraded"
    else:
        state = "operational"
    if in_maintenance and RANK[state] < RANK["partial_outage"]:
        return "maintenance"
    return state


def _probes(conn: Connection, internal: set[str]) -> list[tuple[str, str, str]]:
    """(probe name, internal component, state) of the enabled probes of these components."""
    p, st = t.probes.c, t.probe_state.c
    rows = conn.execute(
        select(p.name, p.component, st.state)
        .select_from(t.probes.outerjoin(t.probe_state, st.probe_id == p.id))
        .where(p.component.in_(sorted(internal)), p.enabled.is_(True))
    ).all()
    return [(r.name, r.component, r.state or "pending") for r in rows]


def _touches(window: dict[str, Any], comps: list[str], probe_names: set[str]) -> bool:
    if not window["components"] and not window["probes"]:
        return True  # the whole site
    return bool(set(window["components"]) & set(comps) or set(window["probes"]) & probe_names)


def uptime_days(
    conn: Connection, settings: Settings, now: float
) -> dict[str, dict[date, tuple[int, int]]]:
    """Public component -> local day -> (results, OK results), from the hourly rollups."""
    page = settings.status_page
    owners: dict[str, list[str]] = defaultdict(list)
    for public, comps in page.components.items():
        for comp in comps:
            owners[comp].append(public)
    if not owners:
        return {}
    first_hour = int(now // 3600) - page.history_days * 24
    h, p = t.rollup_hour.c, t.probes.c
    rows = conn.execute(
        select(p.component, h.bucket, func.sum(h.n), func.sum(h.n_ok))
        .select_from(t.probes.join(t.rollup_hour, h.probe_id == p.id))
        .where(p.component.in_(sorted(owners)), h.bucket >= first_hour)
        .group_by(p.component, h.bucket)
    ).all()
    zone = settings.zone
    out: dict[str, dict[date, tuple[int, int]]] = {name: {} for name in page.components}
    for comp, bucket, total, ok in rows:
        day = datetime.fromtimestamp(int(bucket) * 3600, zone).date()
        for public in owners[comp]:
            n0, ok0 = out[public].get(day, (0, 0))
            out[public][day] = (n0 + int(total or 0), ok0 + int(ok or 0))
    return out


def bar_class(value: float | None) -> str:
    if value is None:
        return "none"
    if value >= 0.999:
        return "good"
    return "fair" if value >= 0.99 else "poor"


def _bars(
    settings: Settings, days: dict[date, tuple[int, int]], now: float
) -> tuple[list[dict[str, Any]], float | None]:
    today = datetime.fromtimestamp(now, settings.zone).date()
    bars = []
    total = ok = 0
    for back in range(settings.status_page.history_days - 1, -1, -1):
        day = today - timedelta(days=back)
        n, good = days.get(day, (0, 0))
        total, ok = total + n, ok + good
        value = good / n if n else None
        bars.append({"day": day.isoformat(), "value": value, "class": bar_class(value)})
    return bars, (ok / total if total else None)


def _incidents(conn: Connection, settings: Settings, now: float) -> tuple[list, list]:
    """(current, recently resolved) public incidents, each with its published notices."""
    n = t.status_notices.c
    since = now - settings.status_page.past_incidents_days * 86400.0
    recent = conn.execute(
        select(n.incident_id).where(n.state == "published", n.published_at >= since).distinct()
    ).scalars()
    open_ids = conn.execute(
        select(n.incident_id).where(n.state == "published", n.remind_at.is_not(None)).distinct()
    ).scalars()
    ids = sorted(set(recent) | set(open_ids))
    if not ids:
        return [], []
    rows = conn.execute(
        select(t.status_notices)
        .where(n.incident_id.in_(ids), n.state == "published")
        .order_by(n.published_at.desc(), n.id.desc())
    ).mappings()
    by_incident: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_incident[row["incident_id"]].append(notice_view(row))
    current: list[dict[str, Any]] = []
    past: list[dict[str, Any]] = []
    for updates in by_incident.values():
        latest = updates[0]
        item = {
            "title": latest["title"],
            "status": latest["public_status"],
            "components": latest["components"],
            "started_at": updates[-1]["published_at"],
            "updated_at": latest["published_at"],
            "updates": updates,
        }
        (past if latest["public_status"] == "resolved" else current).append(item)
    current.sort(key=lambda i: -i["updated_at"])
    past.sort(key=lambda i: -i["updated_at"])
    return current, past


def build(conn: Connection, settings: Settings, now: float, days: Any = None) -> dict[str, Any]:
    page = settings.status_page
    internal = {c for comps in page.components.values() for c in comps}
    probes = _probes(conn, internal)
    windows = [
        w
        for w in list_windows(conn, settings, now)
        if w["starts_at"] and _ts(w["starts_at"]) <= now + page.maintenance_ahead
    ]
    uptime = days if days is not None else uptime_days(conn, settings, now)
    components: list[dict[str, Any]] = []
    maintenance: list[dict[str, Any]] = []
    for name, comps in page.components.items():
        mine = [p for p in probes if p[1] in comps]
        names = {p[0] for p in mine}
        active = any(w["state"] == "active" and _touches(w, comps, names) for w in windows)
        state = _component_state([p[2] for p in mine], active)
        bars, overall = _bars(settings, uptime.get(name, {}), now)
        components.append(
            {"name": name, "state": state, "label": LABELS[state], "bars": bars, "uptime": overall}
        )
    for w in windows:
        touched = [
            name
            for name, comps in page.components.items()
            if _touches(w, comps, {p[0] for p in probes if p[1] in comps})
        ]
        if touched:
            maintenance.append(
                {
                    "title": "Scheduled maintenance",
                    "state": "in progress" if w["state"] == "active" else "scheduled",
                    "starts_at": _ts(w["starts_at"]),
                    "ends_at": _ts(w["ends_at"]),
                    "components": touched,
                }
            )
    maintenance.sort(key=lambda m: m["starts_at"])
    current, past = _incidents(conn, settings, now)
    states: list[str] = [c["state"] for c in components]
    worst = max(states, key=RANK.__getitem__, default="operational")
    label = LABELS[worst]
    if worst == "operational":
        # a published, unresolved notice says something is wrong (often with a component no
        # probe decides, or "all services"): the headline must not contradict it
        worst, label = ("incident", INCIDENT_LABEL) if current else (worst, ALL_OK)
    return {
        "title": title(settings),
        "contact": page.contact,
        "overall": worst,
        "overall_label": label,
        "components": components,
        "incidents": current,
        "past": past,
        "maintenance": maintenance,
        "history_days": page.history_days,
        "built_at": now,
    }


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class ViewCache:
    """The built view for `cache_for` seconds; the uptime days until the hour changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._view: tuple[float, dict[str, Any]] | None = None
        self._days: tuple[int, Any] | None = None
        self._rendered: dict[str, tuple[float, bytes]] = {}

    def view(self, conn_factory: Any, settings: Settings, now: float) -> dict[str, Any]:
        with self._lock:
            if self._view is not None and now - self._view[0] < settings.status_page.cache_for:
                return self._view[1]
            hour = int(now // 3600)
            with conn_factory() as conn:
                if self._days is None or self._days[0] != hour:
                    self._days = (hour, uptime_days(conn, settings, now))
                built = build(conn, settings, now, self._days[1])
            self._view = (now, built)
            self._rendered.clear()
            return built

    def rendered(self, key: str, now: float, ttl: float, make: Any) -> bytes:
        """A rendering of the current view (html, atom), made once per view."""
        with self._lock:
            found = self._rendered.get(key)
            if found is not None and now - found[0] < ttl:
                return found[1]
        body: bytes = make()
        with self._lock:
            self._rendered[key] = (now, body)
        return body

    def clear(self) -> None:
        with self._lock:
            self._view = None
            self._days = None
            self._rendered.clear()


__all__ = ["LABELS", "ViewCache", "bar_class", "build", "uptime_days"]
