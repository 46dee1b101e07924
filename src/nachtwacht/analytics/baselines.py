"""Performance baselines: what "normal" measured, and what has regressed since.

`capture` measures a window (24 h by default) and stores it in `baselines`: p50/p95/mean latency
per probe from raw results, error events per hour, host resource use (host probe values: disk,
memory, swap percent used, cpu percent busy, load per core) and Frappe request latency and
5xx rate per site. `compare` measures the same length of time up to now and lists what got
worse beyond the configured margins. This is the protocol's "re-establish the performance
baseline" step after an incident: capture, then compare against it later.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import groupby
from typing import Any

from sqlalchemy import Connection, case, func, or_, select

from nachtwacht.analytics.models import BaselineSettings
from nachtwacht.analytics.stats import percentile, rounded
from nachtwacht.problems import Problem
from nachtwacht.store import tables as t
from nachtwacht.store.db import inserted_id


class BaselineError(Problem):
    """A baseline that cannot be captured or read; `field` names the culprit."""


# ---------------------------------------------------------------------------- measuring


def _probes(conn: Connection) -> Sequence[Any]:
    p = t.probes.c
    return conn.execute(
        select(p.id, p.name, p.kind, p.component, p.config_json)
        .where(p.enabled.is_(True))
        .order_by(p.name)
    ).all()


def _summary(values: list[float]) -> dict[str, Any]:
    values.sort()
    return {
        "samples": len(values),
        "p50": rounded(percentile(values, 50), 2),
        "p95": rounded(percentile(values, 95), 2),
        "mean": rounded(sum(values) / len(values), 2),
        "max": rounded(values[-1], 2),
    }


def probe_latency(
    conn: Connection, start: float, end: float, only: set[str] | None = None
) -> dict[str, dict[str, Any]]:
    """p50/p95/mean latency per probe (all enabled ones, or those named in `only`) from the raw
    results in [start, end)."""
    r = t.results.c
    probes = {p.id: p for p in _probes(conn) if only is None or p.name in only}
    if not probes:
        return {}
    query = (
        select(r.probe_id, r.latency_ms)
        .where(r.ts >= start, r.ts < end, r.latency_ms.is_not(None))
        .order_by(r.probe_id)
    )
    if only is not None:
        query = query.where(r.probe_id.in_(list(probes)))
    out: dict[str, dict[str, Any]] = {}
    # streamed and grouped by probe: a day of 4,000 probes is millions of rows, and only one
    # probe's values are ever held at a time
    rows = conn.execute(query.execution_options(yield_per=10_000))
    for probe_id, group in groupby(rows, key=lambda row: row[0]):
        probe = probes.get(probe_id)
        if probe is not None:
            values = [float(row[1]) for row in group]
            out[probe.name] = {"component": probe.component, "kind": probe.kind} | _summary(values)
    return dict(sorted(out.items()))


def resource_use(conn: Connection, start: float, end: float) -> dict[str, dict[str, Any]]:
    """Per host probe: what it measures and the mean, p95, max and last value in the window."""
    r = t.results.c
    out: dict[str, dict[str, Any]] = {}
    for probe in _probes(conn):
        if probe.kind != "host":
            continue
        config = json.loads(probe.config_json or "{}")
        rows = conn.execute(
            select(r.value)
            .where(r.probe_id == probe.id, r.ts >= start, r.ts < end, r.value.is_not(None))
            .order_by(r.ts)
        ).all()
        if not rows:
            continue
        values = [float(v) for (v,) in rows]
        last = values[-1]
        out[probe.name] = {
            "metric": config.get("metric"),
            "mount": config.get("mount") if config.get("metric") == "disk" else None,
            "last": rounded(last, 2),
        } | _summary(values)
    return out


def error_rate(conn: Connection, start: float, end: float) -> dict[str, Any]:
    e = t.error_events.c
    hours = max((end - start) / 3600.0, 1e-9)
    by_env = {
        (env or "(none)"): int(n)
        for env, n in conn.execute(
            select(e.environment, func.count())
            .where(e.ts >= start, e.ts < end)
            .group_by(e.environment)
        )
    }
    total = sum(by_env.values())
    return {"events": total, "per_hour": round(total / hours, 3), "by_environment": by_env}


def request_latency(conn: Connection, start: float, end: float) -> dict[str, dict[str, Any]]:
    """Frappe requests per site: mean duration, the minutes' p95 averaged, 5xx rate."""
    q = t.request_minutes.c
    query = (
        select(
            q.source,
            func.sum(q.n),
            func.sum(q.n_5xx),
            func.sum(q.duration_sum_ms),
            func.max(q.duration_max_ms),
            # minute p95s weighted by requests: an approximation, percentiles do not add up
            func.sum(q.p95_ms * q.n),
            func.sum(case((q.p95_ms.is_not(None), q.n), else_=0)),
        )
        .where(q.minute >= int(start // 60), q.minute < int(end // 60))
        .group_by(q.source)
    )
    out = {}
    for source, n, n5, dur, dmax, p95w, p95n in conn.execute(query):
        n = int(n or 0)
        if not n:
            continue
        out[source] = {
            "requests": n,
            "mean_ms": rounded(float(dur or 0) / n, 2),
            "p95": rounded(float(p95w) / int(p95n), 2) if p95w is not None and p95n else None,
            "max_ms": rounded(dmax, 2),
            "error_percent": rounded(100.0 * int(n5 or 0) / n, 3),
        }
    return out


def measure(conn: Connection, start: float, end: float) -> dict[str, Any]:
    return {
        "probes": probe_latency(conn, start, end),
        "errors": error_rate(conn, start, end),
        "resources": resource_use(conn, start, end),
        "requests": request_latency(conn, start, end),
    }


# ---------------------------------------------------------------------------- storing


def _view(row: Any, with_data: bool = False) -> dict[str, Any]:
    data = json.loads(row["data_json"])
    out = {
        "id": row["id"],
        "name": row["name"],
        "captured_at": row["captured_at"],
        "captured_by": row["captured_by"],
        "window_start": row["window_start"],
        "window_end": row["window_end"],
        "probes": len(data.get("probes", {})),
        "errors_per_hour": data.get("errors", {}).get("per_hour"),
    }
    if with_data:
        out["data"] = data
    return out


def capture(
    conn: Connection, now: float, window: float, actor: str, name: str | None = None
) -> dict[str, Any]:
    if window < 60:
        raise BaselineError("the window must be at least 1 minute", field="window")
    name = (name or "").strip() or "baseline " + datetime.fromtimestamp(now, UTC).strftime(
        "%Y-%m-%d %H:%M UTC"
    )
    if len(name) > 120:
        raise BaselineError("the name is longer than 120 characters", field="name")
    start = now - window
    data = measure(conn, start, now)
    baseline_id = inserted_id(
        conn.execute(
            t.baselines.insert().values(
                name=name,
                captured_at=now,
                captured_by=actor[:120],
                window_start=start,
                window_end=now,
                data_json=json.dumps(data, sort_keys=True),
            )
        )
    )
    return get_baseline(conn, int(baseline_id))


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
        select(i.id).where(or_(i.resolved_at.is_(None), i.resolved_at > start)).limit(1)
    ).first()
    alert = conn.execute(
        select(a.id)
        .where(or_(a.status == "firing", a.resolved_at.is_(None), a.resolved_at > start))
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


def list_baselines(conn: Connection, limit: int = 50) -> list[dict[str, Any]]:
    b = t.baselines.c
    rows = conn.execute(
        select(t.baselines).order_by(b.captured_at.desc(), b.id.desc()).limit(limit)
    ).mappings()
    return [_view(r) for r in rows]


def get_baseline(conn: Connection, baseline_id: int, field: str = "id") -> dict[str, Any]:
    row = (
        conn.execute(select(t.baselines).where(t.baselines.c.id == baseline_id)).mappings().first()
    )
    if row is None:
        raise BaselineError(f"there is no baseline {baseline_id}", field, kind="not_found")
    return _view(row, with_data=True)


def latest_baseline(conn: Connection) -> dict[str, Any] | None:
    b = t.baselines.c
    row = (
        conn.execute(select(t.baselines).order_by(b.captured_at.desc(), b.id.desc()).limit(1))
        .mappings()
        .first()
    )
    return _view(row, with_data=True) if row is not None else None


# ---------------------------------------------------------------------------- comparing


def latency_verdict(
    base: dict[str, Any] | None, current: dict[str, Any] | None, cfg: BaselineSettings
) -> str:
    if base is None:
        return "new"
    if current is None or current["samples"] < cfg.min_samples:
        return "no data"
    b, c = base["p95"], current["p95"]
    if c > cfg.latency_ratio * b and c - b > cfg.latency_min_ms:
        return "regression"
    if b > cfg.latency_ratio * c and b - c > cfg.latency_min_ms:
        return "improved"
    return "ok"


def latency_changes(
    base: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]], cfg: BaselineSettings
) -> list[dict[str, Any]]:
    out = []
    for name in sorted(set(base) | set(current)):
        b, c = base.get(name), current.get(name)
        out.append(
            {
                "probe": name,
                "component": (c or b or {}).get("component"),
                "baseline_p50": b["p50"] if b else None,
                "baseline_p95": b["p95"] if b else None,
                "current_p50": c["p50"] if c else None,
                "current_p95": c["p95"] if c else None,
                "samples": c["samples"] if c else 0,
                "ratio": rounded(c["p95"] / b["p95"], 3) if b and c and b["p95"] else None,
                "status": latency_verdict(b, c, cfg),
            }
        )
    return out


def _errors_change(base: dict[str, Any], cur: dict[str, Any], cfg: BaselineSettings) -> dict:
    b, c = base.get("per_hour", 0.0), cur.get("per_hour", 0.0)
    worse = c > cfg.error_ratio * b and c - b > cfg.error_min_per_hour
    return {
        "baseline_per_hour": b,
        "current_per_hour": c,
        "status": "regression" if worse else "ok",
    }


def _resource_changes(base: dict, cur: dict, cfg: BaselineSettings) -> list[dict[str, Any]]:
    out = []
    for name in sorted(set(base) & set(cur)):
        b, c = base[name], cur[name]
        delta = c["mean"] - b["mean"]
        # two CPU samples are noise, not a regression: like latency, too few are not compared
        enough = min(b.get("samples", 0), c.get("samples", 0)) >= cfg.min_samples
        if not enough:
            status = "no data"
        elif c.get("metric") != "load" and delta > cfg.resource_points:
            status = "regression"  # load is per core, not a percentage: points do not apply
        else:
            status = "ok"
        out.append(
            {
                "probe": name,
                "metric": c.get("metric"),
                "baseline_mean": b["mean"],
                "current_mean": c["mean"],
                "delta": rounded(delta, 2),
                "samples": c.get("samples", 0),
                "status": status,
            }
        )
    return out


def _request_changes(base: dict, cur: dict, cfg: BaselineSettings) -> list[dict[str, Any]]:
    out = []
    for name in sorted(set(base) & set(cur)):
        b, c = base[name], cur[name]
        status = "ok"
        if b.get("p95") is not None and c.get("p95") is not None:
            worse = c["p95"] > cfg.latency_ratio * b["p95"] and c["p95"] - b["p95"] > (
                cfg.latency_min_ms
            )
            status = "regression" if worse else "ok"
        out.append(
            {
                "source": name,
                "baseline_p95": b.get("p95"),
                "current_p95": c.get("p95"),
                "baseline_mean_ms": b["mean_ms"],
                "current_mean_ms": c["mean_ms"],
                "baseline_error_percent": b["error_percent"],
                "current_error_percent": c["error_percent"],
                "status": status,
            }
        )
    return out


def compare(
    conn: Connection,
    now: float,
    cfg: BaselineSettings,
    against: int | None = None,
    window: float | None = None,
) -> dict[str, Any]:
    """The last `window` (default: the baseline's own length) against a baseline (default: the
    latest); `regressions` lists what got worse beyond the configured margins."""
    base = get_baseline(conn, against, "against") if against is not None else latest_baseline(conn)
    if base is None:
        raise BaselineError(
            "there is no baseline yet: capture one with `nachtwacht baseline capture`",
            kind="not_found",
        )
    length = window or (base["window_end"] - base["window_start"])
    current = measure(conn, now - length, now)
    data = base["data"]
    probes = latency_changes(data.get("probes", {}), current["probes"], cfg)
    errors = _errors_change(data.get("errors", {}), current["errors"], cfg)
    resources = _resource_changes(data.get("resources", {}), current["resources"], cfg)
    requests = _request_changes(data.get("requests", {}), current["requests"], cfg)
    bad = "regression"
    regressions = [
        {"kind": "latency", "name": p["probe"], **p} for p in probes if p["status"] == bad
    ]
    if errors["status"] == bad:
        regressions.append({"kind": "errors", "name": "error events", **errors})
    regressions += [
        {"kind": "resource", "name": r["probe"], **r} for r in resources if r["status"] == bad
    ]
    regressions += [
        {"kind": "requests", "name": r["source"], **r} for r in requests if r["status"] == bad
    ]
    return {
        "baseline": {k: v for k, v in base.items() if k != "data"},
        "window": {"start": now - length, "end": now},
        "probes": probes,
        "errors": errors,
        "resources": resources,
        "requests": requests,
        "regressions": regressions,
        "ok": not regressions,
        "margins": {
            "latency_ratio": cfg.latency_ratio,
            "latency_min_ms": cfg.latency_min_ms,
            "error_ratio": cfg.error_ratio,
            "error_min_per_hour": cfg.error_min_per_hour,
            "resource_points": cfg.resource_points,
        },
    }
