"""`nachtwacht export`: the monitoring data of a time range as one documented JSON file.

The format (`"format": "nachtwacht-export"`, `format_version` 1) is described in
docs/backup.md. Every time is written twice: `<name>` as ISO 8601 UTC with milliseconds and
`<name>_epoch` as epoch seconds (the exact stored value). Columns holding JSON (`*_json`) are
decoded into `<name>` without the suffix. Secrets are left out: incident acknowledge tokens,
and what nachtwacht.config.redact masks in probe configs.

Rows are read in keyset pages of PAGE rows inside one read snapshot and written as they come,
so a year of results does not have to fit in memory.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Double,
    Select,
    Table,
    and_,
    or_,
    select,
    true,
)

from nachtwacht import __version__
from nachtwacht.backup.integrity import backend_of
from nachtwacht.config.redact import probe_shown
from nachtwacht.durations import parse_duration
from nachtwacht.probes.results import Status
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store

FORMAT = "nachtwacht-export"
FORMAT_VERSION = 1
PAGE = 1000
SECTIONS = (
    "probes",
    "results",
    "state_changes",
    "alerts",
    "incidents",
    "error_issues",
    "error_events",
)
_TIME_NAMES = {"ts", "since", "first_seen", "last_seen", "first_failure", "last_check"}
_OMIT = {"incidents": {"ack_token"}}


class ExportError(Exception):
    """Bad input for an export (a time that cannot be read, an empty range)."""


def parse_when(value: str | None, now: float, name: str) -> float | None:
    """Epoch seconds, ISO 8601 (UTC unless it names an offset), or a duration ago (`7d`)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise ExportError(f"--{name}: '{value}' is not a time")
        return number
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            return now - parse_duration(text)
        except ValueError:
            raise ExportError(
                f"--{name}: '{value}' is not a time; use ISO 8601 (2027-01-15T08:00:00Z), "
                "epoch seconds, or a duration ago such as 7d"
            ) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def iso_ms(ts: float) -> str | None:
    """ISO 8601 UTC with milliseconds; None for a value no calendar date has (the epoch stays)."""
    try:
        dt = datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_time(column: Column[Any]) -> bool:
    return isinstance(column.type, Double) and (
        column.name in _TIME_NAMES or column.name.endswith("_at")
    )


def export_row(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """One row as the export writes it: times twice, JSON columns decoded, secrets omitted."""
    out: dict[str, Any] = {}
    omit = _OMIT.get(table.name, set())
    for column in table.columns:
        name, value = column.name, row[column.name]
        if name in omit:
            continue
        if is_time(column):
            out[name] = None if value is None else iso_ms(value)
            out[f"{name}_epoch"] = value
        elif name.endswith("_json"):
            out[name.removesuffix("_json")] = _decode(value)
        else:
            out[name] = value
    if "status" in out and table.name in ("results", "state_changes"):
        out["status_label"] = Status(out["status"]).label if out["status"] in (0, 1, 2, 3) else None
    if table.name == "probes":
        config = out.get("config")
        out["config"] = probe_shown(config) if isinstance(config, dict) else config
    return out


def _decode(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


def export(
    store: Store, output: Path, *, since: float | None, until: float, now: float, site: str
) -> dict[str, int]:
    """Write the export to `output` (atomically: a temporary file renamed); rows per section."""
    if since is not None and since >= until:
        raise ExportError("--since must be before --until")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    counts: dict[str, int] = {}
    try:
        with snapshot(store) as conn, tmp.open("w", encoding="utf-8") as fh:
            header = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "nachtwacht_version": __version__,
                "site": site,
                "generated_at": iso_ms(now),
                "generated_at_epoch": now,
                "since": iso_ms(since) if since is not None else None,
                "since_epoch": since,
                "until": iso_ms(until),
                "until_epoch": until,
            }
            fh.write("{\n")
            for key, value in header.items():
                fh.write(f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)},\n")
            for section in SECTIONS:
                counts[section] = _section(fh, section, _rows(conn, section, since, until))
            fh.write(f'"counts": {json.dumps(counts)}\n}}\n')
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    return counts


def _section(fh: IO[str], name: str, rows: Iterator[dict[str, Any]]) -> int:
    fh.write(f'"{name}": [')
    n = 0
    for row in rows:
        fh.write(("\n" if n == 0 else ",\n") + json.dumps(row, ensure_ascii=False))
        n += 1
    fh.write("\n],\n" if n else "],\n")
    return n


def _at_or_after(column: Column[Any], since: float | None) -> ColumnElement[bool]:
    return true() if since is None else column >= since


def _range(table: Table, since: float | None, until: float) -> ColumnElement[bool]:
    """Which rows of a section belong to the range."""
    c = table.c
    if table.name == "probes":
        return true()
    if table.name == "alerts":  # active at any moment of the range
        return and_(
            c.fired_at < until, or_(c.resolved_at.is_(None), _at_or_after(c.resolved_at, since))
        )
    if table.name == "error_issues":
        return and_(c.first_seen < until, _at_or_after(c.last_seen, since))
    return and_(_at_or_after(c.ts, since), c.ts < until)


def _rows(
    conn: Connection, section: str, since: float | None, until: float
) -> Iterator[dict[str, Any]]:
    if section == "incidents":
        yield from _incidents(conn, since, until)
        return
    table = t.metadata.tables[section]
    query = select(table).where(_range(table, since, until))
    for row in _pages(conn, table, query):
        yield export_row(table, row)


def _incidents(conn: Connection, since: float | None, until: float) -> Iterator[dict[str, Any]]:
    """Incidents open at any moment of the range, each with its whole timeline."""
    c = t.incidents.c
    query = select(t.incidents).where(
        and_(c.started_at < until, or_(c.resolved_at.is_(None), _at_or_after(c.resolved_at, since)))
    )
    batch: list[dict[str, Any]] = []
    for row in _pages(conn, t.incidents, query):
        batch.append(row)
        if len(batch) >= PAGE:
            yield from _with_timelines(conn, batch)
            batch = []
    yield from _with_timelines(conn, batch)


def _with_timelines(conn: Connection, batch: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    if not batch:
        return
    e = t.incident_events.c
    events: dict[int, list[dict[str, Any]]] = {}
    query = (
        select(t.incident_events)
        .where(e.incident_id.in_([r["id"] for r in batch]))
        .order_by(e.incident_id, e.ts, e.id)
    )
    for event in conn.execute(query).mappings():
        events.setdefault(event["incident_id"], []).append(
            export_row(t.incident_events, dict(event))
        )
    for row in batch:
        yield {**export_row(t.incidents, row), "timeline": events.get(row["id"], [])}


def _pages(conn: Connection, table: Table, query: Select[Any]) -> Iterator[dict[str, Any]]:
    """Keyset pages by id: bounded memory without a server-side cursor held open."""
    key = table.c.id
    last: Any = None
    while True:
        page = query if last is None else query.where(key > last)
        rows = [dict(r) for r in conn.execute(page.order_by(key).limit(PAGE)).mappings()]
        yield from rows
        if len(rows) < PAGE:
            return
        last = rows[-1]["id"]


@contextmanager
def snapshot(store: Store) -> Iterator[Connection]:
    """A read-only connection that sees one snapshot of the store throughout."""
    with store.connect() as base:
        if backend_of(store.engine) == "sqlite":
            with base.begin():
                # pysqlite starts no transaction for SELECTs; BEGIN pins one WAL snapshot
                base.exec_driver_sql("BEGIN")
                yield base
        else:
            conn = base.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn
