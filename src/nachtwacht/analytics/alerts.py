"""Alerts from analytics, raised through the same pipeline as API alerts (`alerts.service`).

Each condition has a stable fingerprint, so an evaluation every few minutes refreshes one open
alert instead of opening new ones, and the alert resolves when a later evaluation finds the
condition gone:

| fingerprint                     | fires when                                        | severity |
|---------------------------------|---------------------------------------------------|----------|
| analytics:disk:<probe>          | the disk fills within disk_s2_hours (S2) or       | S2 / S1  |
|                                 | disk_s1_hours (S1), with R² ≥ forecast.min_r2     |          |
| analytics:spike:<environment>   | this or the last hour is a spike against the      | config   |
|                                 | hours of spike_baseline before it                 | (S3)     |
| analytics:new-issue:<issue id>  | an issue first seen in one of `environments`      | config   |
|                                 | (resolves when the issue is resolved or ignored)  | (S3)     |
| analytics:latency:<probe>       | p95 over latency_window regressed against the     | config   |
|                                 | latest baseline                                   | (S3)     |

A disk alert that gets worse (S2 → S1) raises its alert's and its incident's severity.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update

from nachtwacht.alerts import service as pipeline
from nachtwacht.alerts.service import Signal
from nachtwacht.analytics import baselines
from nachtwacht.analytics.forecast import disk_forecasts
from nachtwacht.analytics.models import AnalyticsSettings
from nachtwacht.analytics.patterns import HOUR, hourly_counts
from nachtwacht.analytics.stats import robust_scale
from nachtwacht.config.schema import Settings
from nachtwacht.incidents import service as incidents
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store

SOURCE = "analytics"
DISK = "analytics:disk:"
SPIKE = "analytics:spike:"
NEW_ISSUE = "analytics:new-issue:"
LATENCY = "analytics:latency:"
WATERMARK = "analytics.new_issue.watermark"
ALL_ENVIRONMENTS = "all"


def _signal(fingerprint: str, firing: bool, now: float, **kw: Any) -> Signal:
    base: dict[str, Any] = {
        "title": kw.pop("title", fingerprint),
        "component": kw.pop("component", SOURCE),
        "severity": kw.pop("severity", 3),
        "started_at": kw.pop("started_at", now),
    }
    return Signal(
        fingerprint=fingerprint[:200],
        source=SOURCE,
        firing=firing,
        detected_at=now,
        **base,
        **kw,
    )


def open_fingerprints(conn: Connection, prefix: str) -> set[str]:
    a = t.alerts.c
    rows = conn.execute(
        select(a.fingerprint).where(
            a.source == SOURCE, a.status == "firing", a.fingerprint.like(prefix + "%")
        )
    )
    return {r[0] for r in rows}


def open_alerts(conn: Connection, limit: int = 50) -> list[dict[str, Any]]:
    """Analytics alerts still firing, worst and newest first."""
    a = t.alerts.c
    rows = conn.execute(
        select(a.id, a.fingerprint, a.title, a.severity, a.message, a.incident_id, a.fired_at)
        .where(a.source == SOURCE, a.status == "firing")
        .order_by(a.severity, a.fired_at.desc())
        .limit(limit)
    ).mappings()
    return [dict(r) for r in rows]


def _resolutions(
    conn: Connection, prefix: str, firing: set[str], clear: set[str] | None, now: float
) -> list[Signal]:
    """Resolve signals for open alerts of `prefix` not firing now; with `clear` given, only for
    those positively known to be clear (the others' state is unknown: keep them)."""
    out = []
    for fp in sorted(open_fingerprints(conn, prefix) - firing):
        if clear is None or fp in clear:
            out.append(_signal(fp, False, now, message="condition cleared"))
    return out


# ---------------------------------------------------------------------------- disk


def disk_signals(conn: Connection, cfg: AnalyticsSettings, now: float) -> list[Signal]:
    fc, ac = cfg.forecast, cfg.alerts
    firing: list[Signal] = []
    clear: set[str] = set()
    known: set[str] = set()
    for d in disk_forecasts(conn, now, fc):
        fp = f"{DISK}{d['name']}"
        known.add(fp)
        if d["status"] == "insufficient":
            continue  # unknown: neither fire nor resolve
        hours = d["hours_to_full"]
        trusted = d["confidence"]["r2"] is not None and d["confidence"]["r2"] >= fc.min_r2
        if hours is None or hours > ac.disk_s2_hours or not trusted:
            clear.add(fp)
            continue
        severity = 1 if hours <= ac.disk_s1_hours else 2
        within = ac.disk_s1_hours if severity == 1 else ac.disk_s2_hours
        firing.append(
            _signal(
                fp,
                True,
                now,
                title=f"disk {d['mount']} ({d['name']}) full within {within:g} h",
                component=d["component"],
                severity=severity,
                message=(
                    f"{d['message']}; {d['used_percent']}% used now "
                    f"(R² {d['confidence']['r2']}, {d['confidence']['points']} points)"
                ),
                probe_name=d["name"],
                probe_id=d["id"],
                labels={"hours_to_full": hours, "mount": d["mount"]},
            )
        )
    gone = open_fingerprints(conn, DISK) - known  # the probe was removed from the config
    firing_fps = {s.fingerprint for s in firing}
    return firing + _resolutions(conn, DISK, firing_fps, clear | gone, now)


# ---------------------------------------------------------------------------- spikes


def spike_check(
    counts: list[int], z_threshold: float, min_count: int
) -> tuple[int, float, float, float] | None:
    """(count, z, median, offset from the end) of the worse of the last two hours if it is a
    spike against the hours before them; None otherwise."""
    if len(counts) < 3:
        return None
    history = counts[:-2]
    med, scale = robust_scale(history)
    worst = None
    for back in (2, 1):  # the last complete hour, then the current one
        n = counts[-back]
        z = (n - med) / scale
        if z > z_threshold and n >= min_count and (worst is None or z > worst[1]):
            worst = (n, z, med, back)
    return worst


def spike_signals(conn: Connection, settings: Settings, now: float) -> list[Signal]:
    cfg = settings.analytics
    last = int(now // HOUR)
    first = last - max(int(cfg.alerts.spike_baseline // HOUR), 3) + 1
    envs: list[str | None] = [*cfg.alerts.environments] or [None]
    firing = []
    for env in envs:
        fp = f"{SPIKE}{env or ALL_ENVIRONMENTS}"
        counts = hourly_counts(conn, first, last, [env] if env else None)
        found = spike_check(counts, cfg.patterns.spike_z, cfg.patterns.spike_min_count)
        if found is None:
            continue
        n, z, med, back = found
        start = (last - back + 1) * HOUR
        local = datetime.fromtimestamp(start, settings.zone).strftime("%H:%M")
        firing.append(
            _signal(
                fp,
                True,
                now,
                title=f"error spike in {env or 'all environments'}",
                component=cfg.alerts.errors_component,
                severity=cfg.alerts.spike_severity,
                started_at=start,
                message=(
                    f"{n} error events in the hour from {local} "
                    f"(median {med:g} per hour, robust z {z:.1f})"
                ),
                labels={"environment": env, "count": n, "z": round(z, 2)},
            )
        )
    return firing + _resolutions(conn, SPIKE, {s.fingerprint for s in firing}, None, now)


# ---------------------------------------------------------------------------- new issues


def new_issue_signals(
    conn: Connection, store: Store, settings: Settings, now: float
) -> list[Signal]:
    """New issues since the watermark, and resolutions for those since resolved or ignored.

    The watermark is the highest issue id seen, kept in engine_meta and moved in the same
    transaction as the alerts it caused. An id and not `first_seen`: first_seen is the time
    the application says the error happened, and an event can reach us late (a client's
    offline queue, a spool drained after a store outage) with a first_seen older than issues
    already handled; ids are handed out in the order issues are created.
    """
    ac = settings.analytics.alerts
    i = t.error_issues.c
    watermark = store.get_meta(conn, WATERMARK)
    top = conn.execute(select(func.max(i.id))).scalar()
    out: list[Signal] = []
    if watermark is None:
        # the first run: what existed before analytics started watching is not news
        store.set_meta(conn, WATERMARK, {"id": int(top or 0)}, now)
    elif top is not None and top > watermark["id"]:
        query = (
            select(
                i.id,
                i.title,
                i.environment,
                i.level,
                i.first_seen,
                i.project_id,
                t.error_projects.c.name.label("project"),
            )
            .join(t.error_projects, t.error_projects.c.id == i.project_id)
            .where(
                i.id > watermark["id"],
                i.status != "ignored",
                i.first_seen >= now - ac.new_issue_max_age,
            )
        )
        if ac.environments:
            query = query.where(i.environment.in_(ac.environments))
        rows = [
            row
            for row in conn.execute(query.order_by(i.id)).all()
            # a project whose own rule alerts on new issues has them from errors/alerting.py
            if not settings.errors.rule_for(row.project).new_issue
        ]
        shown = rows[: ac.max_new_issue_alerts]
        for k, row in enumerate(shown):
            more = len(rows) - len(shown)
            extra = f"; and {more} more new issues" if more and k == len(shown) - 1 else ""
            out.append(
                _signal(
                    f"{NEW_ISSUE}{row.id}",
                    True,
                    now,
                    title=f"new error in {row.environment or 'no environment'}: {row.title}",
                    component=ac.errors_component,
                    severity=ac.new_issue_severity,
                    started_at=min(row.first_seen, now),
                    message=f"issue #{row.id} ({row.level}) first seen{extra}",
                    labels={"issue_id": row.id, "environment": row.environment},
                )
            )
        store.set_meta(conn, WATERMARK, {"id": int(top)}, now)
    # a new-issue alert is over when someone resolved or ignored the issue (or it is gone)
    open_ids = {int(fp[len(NEW_ISSUE) :]): fp for fp in open_fingerprints(conn, NEW_ISSUE)}
    if open_ids:
        live = {
            row.id
            for row in conn.execute(
                select(i.id).where(i.id.in_(list(open_ids)), i.status == "unresolved")
            )
        }
        for issue_id, fp in sorted(open_ids.items()):
            if issue_id not in live:
                out.append(_signal(fp, False, now, message="issue resolved or ignored"))
    return out


# ---------------------------------------------------------------------------- latency


def latency_signals(conn: Connection, settings: Settings, now: float) -> list[Signal]:
    cfg = settings.analytics
    base = baselines.latest_baseline(conn)
    if base is None:
        return []
    base_probes = base["data"].get("probes", {})
    current = baselines.probe_latency(
        conn, now - cfg.alerts.latency_window, now, only=set(base_probes)
    )
    firing, clear = [], set()
    for row in baselines.latency_changes(base_probes, current, cfg.baseline):
        fp = f"{LATENCY}{row['probe']}"
        if row["status"] in ("ok", "improved", "new"):
            clear.add(fp)
        if row["status"] != "regression":
            continue
        firing.append(
            _signal(
                fp,
                True,
                now,
                title=f"latency regression on {row['probe']}",
                component=row["component"] or SOURCE,
                severity=cfg.alerts.latency_severity,
                probe_name=row["probe"],
                message=(
                    f"p95 {row['current_p95']:.0f} ms over the last "
                    f"{cfg.alerts.latency_window / 60:.0f} min against {row['baseline_p95']:.0f}"
                    f" ms in baseline #{base['id']} “{base['name']}”"
                ),
                labels={"baseline_id": base["id"], "ratio": row["ratio"]},
            )
        )
    gone = open_fingerprints(conn, LATENCY) - {f"{LATENCY}{p}" for p in base_probes}
    return firing + _resolutions(conn, LATENCY, {s.fingerprint for s in firing}, clear | gone, now)


# ---------------------------------------------------------------------------- applying


def evaluate(conn: Connection, store: Store, settings: Settings, now: float) -> list[Signal]:
    """Every analytics signal of this moment (also moves the new-issue watermark)."""
    cfg = settings.analytics
    return (
        disk_signals(conn, cfg, now)
        + spike_signals(conn, settings, now)
        + new_issue_signals(conn, store, settings, now)
        + latency_signals(conn, settings, now)
    )


def _worsen(conn: Connection, settings: Settings, sig: Signal, outcome: Any, now: float) -> None:
    """An open alert whose condition got worse (a disk now full within 4 h): raise it."""
    a = t.alerts.c
    current = conn.execute(select(a.severity).where(a.id == outcome.alert_id)).scalar()
    if current is None or sig.severity >= current:
        return
    conn.execute(
        update(t.alerts)
        .where(a.id == outcome.alert_id)
        .values(severity=sig.severity, title=sig.title[:300])
    )
    if outcome.incident_id is None:
        return
    inc = incidents.get_incident(conn, outcome.incident_id)
    if inc is not None and sig.severity < inc["severity"]:
        incidents.set_severity(
            conn, settings, inc["id"], sig.severity, "nachtwacht", now, f"{sig.title} (worse)"
        )


def apply(
    conn: Connection, settings: Settings, signals: list[Signal], now: float
) -> list[dict[str, Any]]:
    """Run the signals through the alert pipeline; one outcome per signal."""
    results = []
    for sig in signals:
        outcome = pipeline.process(conn, settings, sig, now)
        if outcome.action == "deduplicated" and sig.firing:
            _worsen(conn, settings, sig, outcome, now)
        results.append(
            {
                "fingerprint": sig.fingerprint,
                "action": outcome.action,
                "severity": sig.severity,
                "alert_id": outcome.alert_id,
                "incident_id": outcome.incident_id,
                "queued": outcome.queued,
            }
        )
    return results
