"""Probe data in the store: config sync, batched result writes, and the queries views need.

Plain functions taking a Connection; no HTTP and no printing (web and CLI both call these).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, bindparam, select, update

from nachtwacht.config.redact import model_shown
from nachtwacht.probes.base import ProbeConfig
from nachtwacht.probes.results import State, Status
from nachtwacht.probes.state import ProbeState, Transition, may_alert
from nachtwacht.store import paging
from nachtwacht.store import tables as t
from nachtwacht.store.db import inserted_id


def sync_probes(conn: Connection, configs: Sequence[ProbeConfig], now: float) -> dict[str, int]:
    """Make the `probes` table match the config; return name -> id. History is never deleted."""
    existing = {row.name: row for row in conn.execute(select(t.probes)).all()}
    ids: dict[str, int] = {}
    for cfg in configs:
        # masked: the row is for showing (probe pages, exports, backups), never for running
        payload = json.dumps(model_shown(cfg), separators=(",", ":"))
        row = existing.get(cfg.name)
        if row is None:
            probe_id = inserted_id(
                conn.execute(
                    t.probes.insert().values(
                        name=cfg.name,
                        kind=cfg.kind,
                        component=cfg.component,
                        config_json=payload,
                        enabled=cfg.enabled,
                        created_at=now,
                        updated_at=now,
                    )
                )
            )
            conn.execute(t.probe_state.insert().values(probe_id=probe_id, state="new", since=now))
        else:
            probe_id = row.id
            if (row.config_json, row.enabled, row.kind, row.component) != (
                payload,
                cfg.enabled,
                cfg.kind,
                cfg.component,
            ):
                conn.execute(
                    update(t.probes)
                    .where(t.probes.c.id == probe_id)
                    .values(
                        kind=cfg.kind,
                        component=cfg.component,
                        config_json=payload,
                        enabled=cfg.enabled,
                        updated_at=now,
                    )
                )
        ids[cfg.name] = int(probe_id)
    gone = [row.id for name, row in existing.items() if name not in ids and row.enabled]
    if gone:
        conn.execute(
            update(t.probes).where(t.probes.c.id.in_(gone)).values(enabled=False, updated_at=now)
        )
    return ids


def load_states(conn: Connection, ids: Iterable[int]) -> dict[int, ProbeState]:
    wanted = list(ids)
    out: dict[int, ProbeState] = {}
    if not wanted:
        return out
    rows = conn.execute(select(t.probe_state).where(t.probe_state.c.probe_id.in_(wanted))).all()
    for row in rows:
        out[row.probe_id] = ProbeState(
            state=State(row.state),
            since=row.since,
            failures=row.failures or 0,
            first_failure=row.first_failure,
            last_check=row.last_check,
            last_status=Status(row.last_status) if row.last_status is not None else None,
            last_value=row.last_value,
            last_latency_ms=row.last_latency_ms,
            last_message=row.last_message,
        )
    return out


@dataclass(slots=True)
class ResultRow:
    probe_id: int
    ts: float
    status: int
    value: float | None
    latency_ms: float | None
    lag_ms: float | None
    message: str | None


def write_batch(
    conn: Connection,
    results: Sequence[ResultRow],
    transitions: Sequence[tuple[int, Transition, ResultRow]],
    states: dict[int, ProbeState],
) -> None:
    """One transaction per flush: results, state changes and the latest state of each probe.

    Each state change that may raise or resolve an alert also leaves a `probe_flips` row, so
    the alert is raised even if the process dies right after this commit (the alert worker
    deletes the row when done).
    """
    if results:
        conn.execute(
            t.results.insert(),
            [
                {
                    "probe_id": r.probe_id,
                    "ts": r.ts,
                    "minute": int(r.ts // 60),
                    "status": r.status,
                    "value": r.value,
                    "latency_ms": r.latency_ms,
                    "lag_ms": r.lag_ms,
                    "message": r.message,
                }
                for r in results
            ],
        )
    if transitions:
        conn.execute(
            t.state_changes.insert(),
            [
                {
                    "probe_id": probe_id,
                    "ts": tr.at,
                    "from_state": tr.from_state.value,
                    "to_state": tr.to_state.value,
                    "status": row.status,
                    "value": row.value,
                    "message": row.message,
                    "first_failure": tr.first_failure,
                }
                for probe_id, tr, row in transitions
            ],
        )
        # the alert worker's to-do list, committed with the state it is about
        flips = [
            {
                "probe_id": probe_id,
                "ts": tr.at,
                "from_state": tr.from_state.value,
                "to_state": tr.to_state.value,
                "first_failure": tr.first_failure,
                "message": row.message,
            }
            for probe_id, tr, row in transitions
            if may_alert(tr)
        ]
        if flips:
            conn.execute(t.probe_flips.insert(), flips)
    if states:
        conn.execute(
            update(t.probe_state)
            .where(t.probe_state.c.probe_id == bindparam("pid"))
            .values(
                state=bindparam("s_state"),
                since=bindparam("s_since"),
                last_check=bindparam("s_last_check"),
                last_status=bindparam("s_last_status"),
                last_value=bindparam("s_last_value"),
                last_latency_ms=bindparam("s_last_latency_ms"),
                last_message=bindparam("s_last_message"),
                failures=bindparam("s_failures"),
                first_failure=bindparam("s_first_failure"),
            )
            .execution_options(synchronize_session=False),
            [
                {
                    "pid": pid,
                    "s_state": s.state.value,
                    "s_since": s.since,
                    "s_last_check": s.last_check,
                    "s_last_status": int(s.last_status) if s.last_status is not None else None,
                    "s_last_value": s.last_value,
                    "s_last_latency_ms": s.last_latency_ms,
                    "s_last_message": s.last_message,
                    "s_failures": s.failures,
                    "s_first_failure": s.first_failure,
                }
                # in key order: two members writing overlapping probes (a takeover) lock rows in
                # the same order and never deadlock
                for pid, s in sorted(states.items())
            ],
        )


# -- reads for status, API and metrics ---------------------------------------------------


def _overview_query(include_disabled: bool, name: str | None) -> Select:
    query = (
        select(
            t.probes.c.id,
            t.probes.c.name,
            t.probes.c.kind,
            t.probes.c.component,
            t.probes.c.enabled,
            t.probes.c.config_json,
            t.probe_state.c.state,
            t.probe_state.c.since,
            t.probe_state.c.last_check,
            t.probe_state.c.last_status,
            t.probe_state.c.last_value,
            t.probe_state.c.last_latency_ms,
            t.probe_state.c.last_message,
            t.probe_state.c.failures,
            t.probe_state.c.first_failure,
        )
        .select_from(t.probes.outerjoin(t.probe_state, t.probe_state.c.probe_id == t.probes.c.id))
        .order_by(t.probes.c.component, t.probes.c.name)
    )
    if not include_disabled:
        query = query.where(t.probes.c.enabled.is_(True))
    if name is not None:
        query = query.where(t.probes.c.name == name)
    return query


def count_probes(conn: Connection, include_disabled: bool = False) -> int:
    return paging.count(conn, _overview_query(include_disabled, None))


def probe_overview(
    conn: Connection,
    include_disabled: bool = False,
    name: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    query = paging.window(_overview_query(include_disabled, name), limit, offset)
    out = []
    for row in conn.execute(query).mappings():
        item = dict(row)
        config = json.loads(item.pop("config_json"))
        item["interval"] = config.get("interval")
        item["depends_on"] = config.get("depends_on", [])
        item["severity"] = config.get("severity")
        item["description"] = config.get("description", "")
        out.append(item)
    return out


def probe_by_name(conn: Connection, name: str) -> dict[str, Any] | None:
    found = probe_overview(conn, include_disabled=True, name=name)
    return found[0] if found else None


def probe_config(conn: Connection, name: str) -> dict[str, Any] | None:
    """A probe's stored configuration (unmasked: the caller masks it), or None."""
    raw = conn.execute(select(t.probes.c.config_json).where(t.probes.c.name == name)).scalar()
    return json.loads(raw) if raw else None


def _results_query(probe_id: int, since: float | None) -> Select:
    query = select(
        t.results.c.ts,
        t.results.c.status,
        t.results.c.value,
        t.results.c.latency_ms,
        t.results.c.message,
    ).where(t.results.c.probe_id == probe_id)
    if since is not None:
        query = query.where(t.results.c.ts >= since)
    # id breaks ties so that pages never overlap
    return query.order_by(t.results.c.ts.desc(), t.results.c.id.desc())


def recent_results(
    conn: Connection,
    probe_id: int,
    since: float | None = None,
    limit: int | None = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    rows = conn.execute(paging.window(_results_query(probe_id, since), limit, offset)).mappings()
    return [dict(r) for r in rows]


def count_results(conn: Connection, probe_id: int, since: float | None = None) -> int:
    return paging.count(conn, _results_query(probe_id, since))


def _history_query(probe_id: int) -> Select:
    return (
        select(t.state_changes)
        .where(t.state_changes.c.probe_id == probe_id)
        .order_by(t.state_changes.c.ts.desc(), t.state_changes.c.id.desc())
    )


def state_history(
    conn: Connection, probe_id: int, limit: int | None = 100, offset: int = 0
) -> list[dict[str, Any]]:
    rows = conn.execute(paging.window(_history_query(probe_id), limit, offset)).mappings()
    return [dict(r) for r in rows]


def count_history(conn: Connection, probe_id: int) -> int:
    return paging.count(conn, _history_query(probe_id))


def rollups(
    conn: Connection, probe_id: int, resolution: str, since: float, until: float
) -> list[dict[str, Any]]:
    table, size = (t.rollup_minute, 60) if resolution == "minute" else (t.rollup_hour, 3600)
    rows = conn.execute(
        select(table)
        .where(
            table.c.probe_id == probe_id,
            table.c.bucket >= int(since // size),
            table.c.bucket < int(until // size) + 1,
        )
        .order_by(table.c.bucket)
    ).mappings()
    out = []
    for row in rows:
        item = {k: v for k, v in row.items() if k not in ("probe_id", "hour")}
        item["ts"] = row["bucket"] * size
        item["latency_avg"] = (
            row["latency_sum"] / row["n"] if row["latency_sum"] is not None and row["n"] else None
        )
        item["availability"] = row["n_ok"] / row["n"] if row["n"] else None
        out.append(item)
    return out
