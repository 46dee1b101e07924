"""Maintenance windows in the store: add, list, end early; the input checks silences share.

Both doors (API and CLI) call these. Every input is checked before anything is written, and a
refusal is a `WindowError` (a ValueError) naming the field, so a bad request changes nothing.
Silences are `alerts.silences`. Muting itself is decided in `alerts.maintenance.mute_reason`.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select, update

from nachtwacht.alerts.maintenance import DAYS, occurrence
from nachtwacht.alerts.models import RECURRING, Window
from nachtwacht.clock import iso
from nachtwacht.config import limits
from nachtwacht.config.schema import Settings
from nachtwacht.durations import parse_duration
from nachtwacht.problems import Problem
from nachtwacht.store import tables as t
from nachtwacht.store.db import inserted_id

MATCHER_KINDS = ("probe", "component", "fingerprint")
# 9999-01-01T00:00:00Z: the latest time datetime can still show in any timezone; later (or
# negative, or NaN) epoch seconds would crash the formatting and the views with a server error
MAX_TIME = 253370764800.0


class WindowError(Problem, ValueError):
    """Refused input or action; `field` names the culprit, `kind` why."""


# ---------------------------------------------------------------------------- input parsing


def parse_time(value: str | float | datetime, zone: ZoneInfo, field: str) -> float:
    """Epoch seconds from `YYYY-MM-DD HH:MM` (site timezone), ISO 8601 or a datetime/number."""
    if isinstance(value, bool):
        raise WindowError(f"{field}: a time such as '2025-06-01 02:00' is expected", field)
    if isinstance(value, int | float):
        return _in_range(float(value), field)
    if isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise WindowError(
                f"{field}: '{text}' is not a time; use 'YYYY-MM-DD HH:MM' (in the site's "
                "timezone) or ISO 8601 such as 2025-06-01T02:00:00+02:00",
                field,
            ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return _in_range(value.timestamp(), field)


def _in_range(ts: float, field: str) -> float:
    if not (math.isfinite(ts) and 0 <= ts <= MAX_TIME):
        raise WindowError(f"{field}: the time is out of range (1970-01-01 to 9998-12-31)", field)
    return ts


def span(
    now: float,
    zone: ZoneInfo,
    *,
    start: str | float | datetime | None = None,
    end: str | float | datetime | None = None,
    duration: str | float | None = None,
    start_field: str = "starts_at",
    end_field: str = "ends_at",
    duration_field: str = "duration",
) -> tuple[float, float]:
    """(start, end) from a start (default now) and exactly one of an end or a duration."""
    starts_at = now if start is None else parse_time(start, zone, start_field)
    if end is None and duration is None:
        raise WindowError(
            f"{end_field}: give an end or a {duration_field} (windows and silences always end)",
            end_field,
        )
    if end is not None and duration is not None:
        raise WindowError(
            f"{duration_field}: give either an end or a duration, not both", duration_field
        )
    if duration is not None:
        try:
            seconds = parse_duration(duration)
        except ValueError as exc:
            raise WindowError(f"{duration_field}: {exc}", duration_field) from None
        if seconds <= 0:
            raise WindowError(f"{duration_field}: must be longer than 0s", duration_field)
        ends_at = _in_range(starts_at + seconds, duration_field)
    else:
        assert end is not None
        ends_at = parse_time(end, zone, end_field)
        if ends_at <= starts_at:
            raise WindowError(
                f"{end_field}: the end ({_local(ends_at, zone)}) must be after the start "
                f"({_local(starts_at, zone)})",
                end_field,
            )
    if ends_at <= now:
        raise WindowError(
            f"{end_field}: the end ({_local(ends_at, zone)}) is already in the past", end_field
        )
    return starts_at, ends_at


def _local(ts: float, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M %Z")


def clean_text(value: str | None, field: str, max_length: int, required: bool = False) -> str:
    text = (value or "").strip()
    if required and not text:
        raise WindowError(f"{field}: must not be empty", field)
    if len(text) > max_length:
        raise WindowError(f"{field}: at most {max_length} characters", field)
    return text


def _names(values: list[str] | tuple[str, ...] | None, field: str) -> list[str]:
    out: list[str] = []
    for value in values or []:
        name = value.strip()
        if not name:
            raise WindowError(f"{field}: names must not be empty", field)
        if name not in out:
            out.append(name)
    return out


def _check_probes(settings: Settings, probes: list[str], field: str) -> None:
    known = {p.name for p in settings.probes}
    for name in probes:
        if name not in known:
            raise WindowError(f"{field}: no probe is named '{name}'", field)


def parse_matcher(settings: Settings, matcher: str) -> str:
    """Normalise `probe:X`, `component:X`, `fingerprint:X` or `all`; probes must exist."""
    text = matcher.strip()
    if text == "all":
        return text
    kind, sep, value = text.partition(":")
    kind, value = kind.strip(), value.strip()
    if not sep or kind not in MATCHER_KINDS or not value:
        raise WindowError(
            f"matcher: '{matcher}' must be probe:NAME, component:NAME, fingerprint:FP or all",
            "matcher",
        )
    if kind == "probe":
        _check_probes(settings, [value], "probe")
    out = f"{kind}:{value}"
    if len(out) > 300:
        raise WindowError("matcher: at most 300 characters", "matcher")
    return out


# ---------------------------------------------------------------------------- windows


def add_window(
    conn: Connection,
    settings: Settings,
    *,
    name: str,
    starts_at: float,
    ends_at: float,
    now: float,
    created_by: str,
    components: list[str] | tuple[str, ...] | None = None,
    probes: list[str] | tuple[str, ...] | None = None,
    comment: str | None = None,
) -> int:
    """Store a one-off window; empty components and probes mean the whole site."""
    name = clean_text(name, "name", 200, required=True)
    created_by = clean_text(created_by, "created_by", limits.NAME, required=True)
    comps = _names(components, "components")
    probe_names = _names(probes, "probes")
    _check_probes(settings, probe_names, "probes")
    if ends_at <= starts_at:
        raise WindowError("ends_at: the end must be after the start", "ends_at")
    if ends_at <= now:
        raise WindowError("ends_at: the end is already in the past", "ends_at")
    return inserted_id(
        conn.execute(
            t.maintenance.insert().values(
                name=name,
                starts_at=starts_at,
                ends_at=ends_at,
                components_json=json.dumps(comps),
                probes_json=json.dumps(probe_names),
                created_by=created_by,
                comment=clean_text(comment, "comment", limits.TEXT) or None,
                ended_early_at=None,
            )
        )
    )


def get_window(conn: Connection, window_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(t.maintenance).where(t.maintenance.c.id == window_id)).mappings()
    found = row.first()
    return dict(found) if found is not None else None


def end_window(conn: Connection, window_id: int, now: float) -> dict[str, Any]:
    """End a window now (or cancel it when it has not started); returns the updated row."""
    row = get_window(conn, window_id)
    if row is None:
        raise WindowError(f"no maintenance window #{window_id}", "id", kind="not_found")
    if row["ended_early_at"] is not None:
        raise WindowError(
            f"maintenance window #{window_id} was already ended", "id", kind="conflict"
        )
    if row["ends_at"] <= now:
        raise WindowError(f"maintenance window #{window_id} is already over", "id", kind="conflict")
    # conditional, so two concurrent ends cannot both claim to have ended it
    done = conn.execute(
        update(t.maintenance)
        .where(t.maintenance.c.id == window_id, t.maintenance.c.ended_early_at.is_(None))
        .values(ended_early_at=now)
    ).rowcount
    if done != 1:
        raise WindowError(
            f"maintenance window #{window_id} was already ended", "id", kind="conflict"
        )
    row["ended_early_at"] = now
    return row


def window_state(starts_at: float, ends_at: float, ended_early_at: float | None, now: float) -> str:
    if ended_early_at is not None and ended_early_at <= now:
        return "ended" if ended_early_at > starts_at else "cancelled"
    if now < starts_at:
        return "upcoming"
    return "active" if now < ends_at else "over"


def store_window_view(row: dict[str, Any], now: float) -> dict[str, Any]:
    return {
        "id": row["id"],
        "source": "store",
        "name": row["name"],
        "state": window_state(row["starts_at"], row["ends_at"], row["ended_early_at"], now),
        "starts_at": iso(row["starts_at"]),
        "ends_at": iso(row["ends_at"]),
        "ended_early_at": iso(row["ended_early_at"]),
        "every": None,
        "components": json.loads(row["components_json"] or "[]"),
        "probes": json.loads(row["probes_json"] or "[]"),
        "created_by": row["created_by"],
        "comment": row["comment"] or "",
    }


def next_occurrence(window: Window, now: float, settings: Settings) -> tuple[float, float] | None:
    """The occurrence of a config window running at `now`, else the next one; None when past."""
    current = occurrence(window, now, settings)
    if current is not None:
        return current
    if window.every is None:
        assert window.start is not None and window.end is not None
        zone = settings.zone
        start = window.start if window.start.tzinfo else window.start.replace(tzinfo=zone)
        end = window.end if window.end.tzinfo else window.end.replace(tzinfo=zone)
        return (start.timestamp(), end.timestamp()) if start.timestamp() > now else None
    match = RECURRING.match(window.every)
    assert match is not None
    days_part = match.group(1)
    days = set(range(7)) if days_part == "daily" else {DAYS.index(d) for d in days_part.split(",")}
    sh, sm = int(match.group(5)), int(match.group(6))
    zone = settings.zone
    today = datetime.fromtimestamp(now, zone).date()
    for ahead in range(0, 8):
        day = today + timedelta(days=ahead)
        if day.weekday() not in days:
            continue
        opens = datetime(day.year, day.month, day.day, sh, sm, tzinfo=zone).timestamp()
        if opens <= now:
            continue
        # the same arithmetic as `occurrence`, so the end shown is the end that mutes
        found = occurrence(window, opens, settings)
        if found is not None:
            return found
    return None


def config_window_view(window: Window, now: float, settings: Settings) -> dict[str, Any] | None:
    found = next_occurrence(window, now, settings)
    if found is None and window.every is None:
        return None
    starts_at, ends_at = found if found is not None else (None, None)
    state = "active" if starts_at is not None and starts_at <= now else "upcoming"
    return {
        "id": None,
        "source": "config",
        "name": window.name,
        "state": state,
        "starts_at": iso(starts_at),
        "ends_at": iso(ends_at),
        "ended_early_at": None,
        "every": window.every,
        "components": list(window.components),
        "probes": list(window.probes),
        "created_by": "config",
        "comment": window.comment,
    }


def list_windows(
    conn: Connection, settings: Settings, now: float, include_past: bool = False
) -> list[dict[str, Any]]:
    """Config windows (with their current or next occurrence) and store windows.

    Without `include_past`, only windows that are active or still to come.
    """
    out: list[dict[str, Any]] = []
    for window in settings.maintenance:
        view = config_window_view(window, now, settings)
        if view is not None:
            out.append(view)
    m = t.maintenance.c
    query = select(t.maintenance).order_by(m.starts_at, m.id)
    if not include_past:
        query = query.where(m.ends_at > now, m.ended_early_at.is_(None))
    out.extend(store_window_view(dict(r), now) for r in conn.execute(query).mappings())
    order = {"active": 0, "upcoming": 1}
    out.sort(key=lambda w: (order.get(w["state"], 2), w["starts_at"] or ""))
    return out


__all__ = [
    "WindowError",
    "add_window",
    "end_window",
    "list_windows",
    "next_occurrence",
    "parse_matcher",
    "parse_time",
    "span",
]
