"""The status report `nachtwacht status` prints and `/api/v1/status` returns: one function."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from nachtwacht.clock import iso
from nachtwacht.durations import parse_duration
from nachtwacht.incidents.models import response_overdue
from nachtwacht.probes import service
from nachtwacht.store import tables as t

if TYPE_CHECKING:
    from nachtwacht.config.schema import Settings

# a state's weight in the overall verdict and the exit code of `nachtwacht status`
SEVERITY = {
    "ok": 0, "new": 0, "pending": 1, "warning": 1, "unknown": 1, "critical": 2, "degraded": 1,
}  # fmt: skip
OVERALL = {0: "ok", 1: "degraded", 2: "critical"}
# the health module persists every 15 s: past this, no engine is running on this store
ENGINE_STALE = 90.0


def stale_after(interval: object) -> float:
    """A result older than this means nobody is checking the probe any more."""
    try:
        seconds = parse_duration(interval) if interval is not None else 60.0
    except ValueError:
        seconds = 60.0
    return 3 * seconds + 60.0


def status_report(conn: Connection, now: float, site: str = "") -> dict[str, Any]:
    probes = service.probe_overview(conn)
    components: dict[str, dict[str, Any]] = {}
    for p in probes:
        comp = components.setdefault(
            p["component"], {"name": p["component"], "state": "ok", "probes": []}
        )
        state = p["state"] or "new"
        age = None if p["last_check"] is None else now - p["last_check"]
        stale = age is not None and age > stale_after(p.get("interval"))
        comp["probes"].append(
            {
                "name": p["name"],
                "kind": p["kind"],
                "state": state,
                "since": iso(p["since"]),
                "last_check": iso(p["last_check"]),
                "age_seconds": None if age is None else round(age, 1),
                # its last answer is too old to trust: the state shown is history, not news
                "stale": stale,
                "value": p["last_value"],
                "latency_ms": p["last_latency_ms"],
                "message": p["last_message"],
                "depends_on": p["depends_on"],
            }
        )
        weight = max(SEVERITY.get(state, 1), 1 if stale else 0)
        if weight > SEVERITY.get(comp["state"], 0):
            comp["state"] = "critical" if weight == 2 else "degraded"
    modules = [
        {
            "module": row.module,
            "instance": row.instance,
            "healthy": not row.consecutive_errors,
            "last_ok": iso(row.last_ok),
            "last_ok_ts": row.last_ok,
            "last_error": row.last_error,
            "consecutive_errors": row.consecutive_errors,
        }
        for row in conn.execute(select(t.module_health).order_by(t.module_health.c.module))
    ]
    open_incidents = [
        {
            "id": row.id,
            "severity": row.severity,
            "status": row.status,
            "title": row.title,
            "detected_at": iso(row.detected_at),
            "acknowledged": row.acknowledged_at is not None,
            "response_due_at": iso(row.response_due_at),
            "response_overdue": response_overdue(row.acknowledged_at, row.response_due_at, now),
        }
        for row in conn.execute(
            select(t.incidents)
            .where(
                t.incidents.c.status.in_(("investigating", "mitigating", "monitoring")),
                t.incidents.c.drill_id.is_(None),  # a drill never makes the site look down
            )
            .order_by(t.incidents.c.severity, t.incidents.c.id)
        )
    ]
    level = max((SEVERITY.get(p["state"] or "new", 1) for p in probes), default=0)
    if any(not m["healthy"] for m in modules):
        level = max(level, 1)
    members = member_rows(conn, now)
    if any(m["dead"] for m in members):
        level = max(level, 1)  # a member went silent: its alert is open too
    last_alive = max((row["last_ok_ts"] for row in modules if row["last_ok_ts"]), default=None)
    engine_running = last_alive is not None and now - last_alive <= ENGINE_STALE
    if not engine_running or any(p["stale"] for c in components.values() for p in c["probes"]):
        # a dead monitor must not look like a quiet night
        level = max(level, 1)
    agents = _agents(conn, now)
    if any(a["silent"] for a in agents):
        level = max(level, 1)
    return {
        "site": site,
        "generated_at": iso(now),
        "overall": OVERALL[level],
        "level": level,
        "components": list(components.values()),
        "incidents": open_incidents,
        "engine": modules,
        "engine_running": engine_running,
        "engine_last_seen": iso(last_alive),
        "members": members,
        "agents": agents,
    }


def member_rows(conn: Connection, now: float) -> list[dict[str, Any]]:
    """The `serve` processes on this store (docs/decisions/0024), oldest first.

    `heartbeat_age` compares the member's clock with ours: for reading only, never for judging
    (the members judge each other by watching the beat counter change).
    """
    m = t.members.c
    return [
        {
            "id": row.id,
            "host": row.host,
            "pid": row.pid,
            "role": row.role,
            "started_at": iso(row.started_at),
            "last_heartbeat": iso(row.heartbeat_at),
            "heartbeat_age": round(max(0.0, now - row.heartbeat_at), 1),
            "probes_owned": row.probes_owned,
            "dead": row.dead_at is not None,
            "dead_since": iso(row.dead_at),
        }
        for row in conn.execute(select(t.members).order_by(m.started_at, m.id))
    ]


def _agents(conn: Connection, now: float) -> list[dict[str, Any]]:
    """Remote probe agents (decision 25): their last contact, and whether they are silent."""
    a = t.agents.c
    rows = conn.execute(
        select(a.location, a.last_seen, a.silent_since, a.last_seq).order_by(a.location)
    ).all()
    return [
        {
            "location": row.location,
            "last_seen": iso(row.last_seen),
            "seconds_since_contact": round(max(0.0, now - row.last_seen), 1),
            "silent": row.silent_since is not None,
            "last_seq": int(row.last_seq),
        }
        for row in rows
    ]


def add_paging(data: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A monitor that can page nobody is degraded, however green its probes are."""
    from nachtwacht.notify.reach import paging_status

    data["paging"] = paging_status(settings)
    if not data["paging"]["ok"] and data["level"] < 1:
        data["level"] = 1
        data["overall"] = OVERALL[1]
    return data
