"""Generated data for the analytics tests, written straight into the tables analytics reads.

No tests here: helpers shared by tests/test_analytics_*.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, insert, select

from nachtwacht.store import tables as t

HOUR = 3600


def add_issue(
    conn: Connection,
    title: str,
    first_seen: float,
    *,
    last_seen: float | None = None,
    category: str | None = None,
    level: str = "error",
    environment: str | None = "production",
    status: str = "unresolved",
    count: int = 0,
    project_id: int = 1,
) -> int:
    ensure_project(conn, project_id, first_seen - 30 * 86400)
    return int(
        conn.execute(
            insert(t.error_issues).values(
                project_id=project_id,
                fingerprint=uuid.uuid4().hex,
                fingerprint_version=1,
                title=title,
                level=level,
                category=category,
                status=status,
                first_seen=first_seen,
                last_seen=last_seen if last_seen is not None else first_seen,
                count=count,
                environment=environment,
            )
        ).inserted_primary_key[0]
    )


def ensure_project(conn: Connection, project_id: int, created_at: float) -> None:
    """Errors are only counted from when a project could report them: make one that could."""
    p = t.error_projects.c
    if conn.execute(select(p.id).where(p.id == project_id)).first() is None:
        conn.execute(
            insert(t.error_projects).values(
                id=project_id,
                name=f"project-{project_id}",
                public_key=uuid.uuid4().hex,
                created_by="tests",
                created_at=created_at,
                disabled=False,
            )
        )


def add_hours(conn: Connection, issue_id: int, counts: Mapping[int, int]) -> None:
    """Events per epoch hour for one issue (zero counts are left out, as the tracker does)."""
    rows = [{"issue_id": issue_id, "hour": h, "n": n} for h, n in counts.items() if n]
    if rows:
        conn.execute(insert(t.error_issue_hours), rows)


def add_events(
    conn: Connection, issue_id: int, times: Iterable[float], environment: str = "production"
) -> None:
    rows = [
        {
            "project_id": 1,
            "event_id": uuid.uuid4().hex,
            "issue_id": issue_id,
            "ts": ts,
            "received_at": ts,
            "level": "error",
            "environment": environment,
            "data_json": "{}",
        }
        for ts in times
    ]
    if rows:
        conn.execute(insert(t.error_events), rows)


def add_probe(
    conn: Connection,
    name: str,
    kind: str = "tcp",
    component: str = "web",
    config: dict[str, Any] | None = None,
    now: float = 1_800_000_000.0,
) -> int:
    existing = conn.execute(select(t.probes.c.id).where(t.probes.c.name == name)).scalar()
    if existing is not None:
        return int(existing)
    cfg = {"name": name, "kind": kind, **(config or {})}
    return int(
        conn.execute(
            insert(t.probes).values(
                name=name,
                kind=kind,
                component=component,
                config_json=json.dumps(cfg),
                enabled=True,
                created_at=now,
                updated_at=now,
            )
        ).inserted_primary_key[0]
    )


def add_results(
    conn: Connection,
    probe_id: int,
    samples: Iterable[tuple[float, float | None, float | None]],
    status: int = 0,
) -> None:
    """Raw results: (ts, value, latency_ms)."""
    rows = [
        {
            "probe_id": probe_id,
            "ts": ts,
            "minute": int(ts // 60),
            "status": status,
            "value": value,
            "latency_ms": latency,
        }
        for ts, value, latency in samples
    ]
    if rows:
        conn.execute(insert(t.results), rows)


def add_minute_rollups(
    conn: Connection, probe_id: int, minutes: Mapping[int, tuple[int, int, float | None]]
) -> None:
    """Minute rollups: minute -> (n, n_ok, latency_sum)."""
    rows = [
        {
            "probe_id": probe_id,
            "bucket": minute,
            "hour": minute // 60,
            "n": n,
            "n_ok": n_ok,
            "n_warning": 0,
            "n_critical": n - n_ok,
            "n_unknown": 0,
            "latency_sum": lat,
            "latency_min": None,
            "latency_max": None,
            "value_sum": None,
            "value_min": None,
            "value_max": None,
        }
        for minute, (n, n_ok, lat) in minutes.items()
    ]
    if rows:
        conn.execute(insert(t.rollup_minute), rows)
