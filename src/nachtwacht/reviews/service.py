"""The fields of a post-incident review that responders fill in, and shared helpers.

Root cause, contributing factors, impact and lessons live in `postmortems` (one row per
incident); improvement actions are follow-ups (followups.py). Every change is recorded on the
incident's timeline, naming the fields and who changed them.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select, update

from nachtwacht.clock import iso
from nachtwacht.config import limits
from nachtwacht.durations import parse_duration
from nachtwacht.incidents import service as incidents
from nachtwacht.incidents.service import IncidentError
from nachtwacht.store import tables as t

FIELDS = ("root_cause", "contributing_factors", "impact", "lessons")
LABELS = {
    "root_cause": "root cause",
    "contributing_factors": "contributing factors",
    "impact": "impact",
    "lessons": "lessons",
}
MAX_FIELD = limits.DOCUMENT
# the protocol's two deadlines: which fields make each of them done
ANALYSIS_FIELDS = ("root_cause", "impact")  # immediate analysis (24 h)
REVIEW_FIELDS = ("lessons",)  # formal review (1 week): the review meeting's lessons


class ReviewError(IncidentError):
    """A review request that cannot be done; the dashboard and API show it like an incident's."""


def get_fields(conn: Connection, incident_id: int) -> dict[str, Any]:
    row = (
        conn.execute(select(t.postmortems).where(t.postmortems.c.incident_id == incident_id))
        .mappings()
        .first()
    )
    if row is None:
        return {**dict.fromkeys(FIELDS), "updated_by": None, "updated_at": None}
    return {k: row[k] for k in (*FIELDS, "updated_by", "updated_at")}


def done(fields: dict[str, Any], names: tuple[str, ...]) -> bool:
    return all((fields.get(n) or "").strip() for n in names)


def set_fields(
    conn: Connection, incident_id: int, values: dict[str, str | None], actor: str, now: float
) -> dict[str, Any]:
    """Set the given fields (None leaves one as it is, "" clears it); returns all of them."""
    incidents.require(conn, incident_id)
    unknown = [k for k in values if k not in FIELDS]
    if unknown:
        raise ReviewError(
            f"unknown field {unknown[0]}; use {', '.join(FIELDS)}", unknown[0], kind="invalid"
        )
    changes = {k: (v.strip() or None) for k, v in values.items() if v is not None}
    if not changes:
        raise ReviewError(
            f"nothing to set: give one of {', '.join(FIELDS)}", FIELDS[0], kind="invalid"
        )
    for key, value in changes.items():
        if value is not None and len(value) > MAX_FIELD:
            raise ReviewError(
                f"{LABELS[key]} is longer than {MAX_FIELD} characters", key, kind="invalid"
            )
    before = get_fields(conn, incident_id)
    changed = [k for k, v in changes.items() if before[k] != v]
    stamp = {"updated_by": actor[:120], "updated_at": now}
    if before["updated_at"] is None:
        conn.execute(t.postmortems.insert().values(incident_id=incident_id, **changes, **stamp))
    else:
        conn.execute(
            update(t.postmortems)
            .where(t.postmortems.c.incident_id == incident_id)
            .values(**changes, **stamp)
        )
    if changed:
        incidents.add_event(
            conn,
            incident_id,
            now,
            "postmortem",
            actor,
            f"review updated: {', '.join(LABELS[k] for k in changed)}",
            {"fields": changed},
        )
    return get_fields(conn, incident_id)


def parse_due(value: str, now: float, zone: ZoneInfo, opens: time = time(9, 0)) -> float:
    """A due time from `2026-01-31` (that day, when business hours open), an ISO date-time
    (site time when it names no zone), or a duration from now (`7d`, `2w`)."""
    text = value.strip()
    if not text:
        raise ReviewError("the due date must not be empty", "due", kind="invalid")
    try:
        return now + parse_duration(text)
    except ValueError:
        pass
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        return datetime.combine(day, opens, zone).timestamp()
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReviewError(
            f"'{value}' is not a due date: use YYYY-MM-DD, YYYY-MM-DDTHH:MM or a duration "
            "such as 7d",
            "due",
            kind="invalid",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)
    return when.timestamp()


def month_bounds(month: str | None, now: float, zone: ZoneInfo) -> tuple[str, float, float]:
    """("YYYY-MM", start, end) of a calendar month in site time; default the current month."""
    if month is None:
        local = datetime.fromtimestamp(now, zone)
        year, number = local.year, local.month
    else:
        try:
            year, number = (int(p) for p in month.split("-"))
            if not (1 <= number <= 12 and 1970 <= year <= 9999 and len(month) == 7):
                raise ValueError
        except ValueError:
            raise ReviewError(
                f"'{month}' is not a month: use YYYY-MM", "month", kind="invalid"
            ) from None
    start = datetime(year, number, 1, tzinfo=zone)
    following = datetime(year + (number == 12), number % 12 + 1, 1, tzinfo=zone)
    return f"{year:04d}-{number:02d}", start.timestamp(), following.timestamp()


def times(row: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """A row with the given epoch columns as ISO strings."""
    return {k: (iso(v) if k in keys else v) for k, v in row.items()}
