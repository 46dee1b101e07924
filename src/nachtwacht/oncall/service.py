"""Who is on call: rotations with their overrides, the overrides table, and policy targets.

When a rotation's turns begin and end, and which override wins, is oncall/turns.py. Overrides
replace the rotation for a while: those in the config and those added at run time (table
`oncall_overrides`). An override naming a contact that is no longer in the config is ignored,
so a stale override can never leave a rotation paging nobody.

Every function that reads overrides takes a `conn` that may be None: then only the config is
consulted (`nachtwacht oncall` still answers when the store is down).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, delete, insert, select

from nachtwacht.clock import iso
from nachtwacht.config.schema import Settings
from nachtwacht.oncall.models import ROLES, Contact, ExternalContact, Rotation
from nachtwacht.oncall.turns import (
    MAX_STEPS,
    Override,
    Timeline,
    load_overrides,
    period,
    shift_at,
    to_ts,
)
from nachtwacht.problems import Problem
from nachtwacht.store import tables as t
from nachtwacht.store.db import inserted_id

ROLE_TITLES = {
    "oncall_engineer": "On-call engineer",
    "technical_lead": "Technical lead",
    "devops": "DevOps engineer",
    "operations_manager": "Operations manager",
    "management": "Management",
    "executives": "Executives",
}
# the roles `nachtwacht oncall` lists after the rotations (the on-call engineer is the rotations)
PROTOCOL_ROLES = tuple(r for r in ROLES if r != "oncall_engineer")
# a calendar longer than this is a mistake (and thousands of rows), not a request
MAX_SCHEDULE_SECONDS = 400 * 86400.0


class OncallError(Problem, ValueError):
    """A request about rotations or overrides that cannot be done; `field` names the culprit."""


# -- queries -----------------------------------------------------------------------------------


def rotation_named(settings: Settings, name: str) -> Rotation:
    found = next((r for r in settings.people.rotations if r.name == name), None)
    if found is None:
        known = ", ".join(r.name for r in settings.people.rotations) or "none configured"
        raise OncallError(
            f"no rotation named '{name}' (rotations: {known})", "rotation", kind="not_found"
        )
    return found


def _timeline(
    conn: Connection | None,
    settings: Settings,
    rotation_name: str,
    since: float = -math.inf,
    until: float = math.inf,
) -> Timeline:
    rotation = rotation_named(settings, rotation_name)
    return Timeline(settings, rotation, load_overrides(conn, settings, rotation, since, until))


def on_call(
    conn: Connection | None, settings: Settings, rotation_name: str, now: float
) -> Contact | None:
    """The contact on call in a rotation at `now`, overrides applied; None before its start."""
    contact, _, _ = _timeline(conn, settings, rotation_name, now, now + 1).at(now)
    return settings.people.contact(contact) if contact else None


def next_handoff(
    conn: Connection | None, settings: Settings, rotation_name: str, now: float
) -> tuple[float, Contact]:
    """When the person on call next changes, and who takes over (overrides applied).

    A rotation of one member never changes hands: then the answer is that member at the next
    regular handoff.
    """
    line = _timeline(conn, settings, rotation_name, now)
    current, _, _ = line.at(now)
    # past the last override, a full cycle of turns without a change means there is none
    last_edge = max((o.ends_at for o in line.overrides), default=now)
    cycle = (len(line.rotation.members) + 1) * period(line.rotation).total_seconds()
    horizon = max(now, last_edge, shift_at(settings, line.rotation, now)[2]) + cycle + 7200
    ts = now
    for _ in range(MAX_STEPS):
        ts = line.next_boundary(ts)
        if ts > horizon:
            break
        contact, _, _ = line.at(ts)
        if contact is not None and contact != current:
            return ts, settings.people.contact(contact)  # type: ignore[return-value]
    _, _, end = shift_at(settings, line.rotation, now)
    member, _, _ = shift_at(settings, line.rotation, end)
    return end, settings.people.contact(member)  # type: ignore[arg-type,return-value]


def schedule(
    conn: Connection | None, settings: Settings, rotation_name: str, start: float, end: float
) -> list[dict[str, Any]]:
    """Who is on call from `start` to `end`, one entry per turn or override piece.

    Each entry: start/end (ISO UTC and epoch seconds), contact (None before the rotation's
    first turn) and name, the regular member and turn, and the override that replaced it.
    """
    if end <= start:
        raise OncallError("until must be after since", "until")
    if end - start > MAX_SCHEDULE_SECONDS:
        raise OncallError("a schedule can span at most 400 days", "until")
    return _timeline(conn, settings, rotation_name, start, end).segments(start, end)


def add_override(
    conn: Connection,
    settings: Settings,
    rotation: str,
    contact: str,
    starts_at: float,
    ends_at: float,
    actor: str,
    now: float,
) -> int:
    """Put `contact` on call in `rotation` from `starts_at` to `ends_at`; returns its id."""
    rotation_named(settings, rotation)
    if settings.people.contact(contact) is None:
        known = ", ".join(c.id for c in settings.people.contacts) or "none configured"
        raise OncallError(f"no contact '{contact}' (contacts: {known})", "contact")
    if not (math.isfinite(starts_at) and math.isfinite(ends_at)):
        raise OncallError("starts_at and ends_at must be real times", "starts_at")
    if ends_at <= starts_at:
        raise OncallError("ends_at must be after starts_at", "ends_at")
    if ends_at <= now:
        raise OncallError(f"ends_at {iso(ends_at)} is in the past; nothing to override", "ends_at")
    return inserted_id(
        conn.execute(
            insert(t.oncall_overrides).values(
                rotation=rotation,
                contact=contact,
                starts_at=starts_at,
                ends_at=ends_at,
                created_by=(actor or "unknown")[:120],
            )
        )
    )


def list_overrides(
    conn: Connection | None,
    settings: Settings,
    now: float,
    rotation: str | None = None,
    include_past: bool = False,
) -> list[dict[str, Any]]:
    """Config and store overrides (by start time), without the ended ones unless asked.

    Store overrides whose rotation or contact has left the config are listed too (marked
    `stale`) so that they can be found and deleted.
    """
    since = -math.inf if include_past else now
    rows: list[dict[str, Any]] = []
    rotations = [rotation_named(settings, rotation)] if rotation else settings.people.rotations
    for rot in rotations:
        for i, o in enumerate(rot.overrides):
            item = Override(
                o.contact,
                to_ts(o.start, settings.zone),
                to_ts(o.end, settings.zone),
                (0, i),
                None,
                "config",
                "config",
            )
            if item.ends_at > since:
                rows.append(item.public(settings, rot.name) | {"stale": False})
    if conn is not None:
        query = select(t.oncall_overrides).order_by(t.oncall_overrides.c.id)
        if rotation:
            query = query.where(t.oncall_overrides.c.rotation == rotation)
        if not include_past:
            query = query.where(t.oncall_overrides.c.ends_at > now)
        names = {r.name for r in settings.people.rotations}
        for row in conn.execute(query).mappings():
            item = Override(
                row["contact"],
                row["starts_at"],
                row["ends_at"],
                (1, row["id"]),
                row["id"],
                "store",
                row["created_by"],
            )
            stale = row["rotation"] not in names or settings.people.contact(row["contact"]) is None
            rows.append(item.public(settings, row["rotation"]) | {"stale": stale})
    return sorted(rows, key=lambda r: (r["starts_at"], r["id"] or 0))


def delete_override(conn: Connection, override_id: int) -> dict[str, Any]:
    """Delete a run-time override; returns what it was. Config overrides live in the config."""
    row = (
        conn.execute(select(t.oncall_overrides).where(t.oncall_overrides.c.id == override_id))
        .mappings()
        .first()
    )
    if row is None:
        raise OncallError(f"no override with id {override_id}", "id", kind="not_found")
    conn.execute(delete(t.oncall_overrides).where(t.oncall_overrides.c.id == override_id))
    return dict(row)


# -- targets and people ------------------------------------------------------------------------


def resolve_target(
    conn: Connection | None, settings: Settings, target: str, now: float
) -> list[Contact]:
    """The contacts a policy target names at `now`.

    `oncall`: whoever is on call in each rotation (contacts with the role oncall_engineer when
    there are no rotations); `oncall:R`: rotation R; `role:X`: every contact with role X;
    `contact:ID`: that contact. `external:` and `channel:` targets name no contacts.

    When rotations exist but none has anybody on call yet (all start in the future), `oncall`
    falls back to the oncall_engineer role too: an incident must page someone.
    """
    people = settings.people
    kind, _, ref = target.partition(":")
    if kind == "contact":
        found = people.contact(ref)
        return [found] if found else []
    if kind == "role":
        return [c for c in people.contacts if ref in c.roles]
    if kind == "oncall" and ref:
        if not any(r.name == ref for r in people.rotations):
            return []
        found = on_call(conn, settings, ref, now)
        return [found] if found else []
    if kind == "oncall":
        seen: dict[str, Contact] = {}
        for rotation in people.rotations:
            found = on_call(conn, settings, rotation.name, now)
            if found is not None:
                seen.setdefault(found.id, found)
        if seen:
            return list(seen.values())
        return [c for c in people.contacts if "oncall_engineer" in c.roles]
    return []


def external_contacts(settings: Settings, which: str | None) -> list[ExternalContact]:
    """External support contacts by id or kind (all when `which` is None)."""
    return [e for e in settings.people.external if which in (None, e.id, e.kind)]


def backup_of(settings: Settings, contact: Contact | str) -> Contact | None:
    """The contact paged when `contact` does not answer, if one is configured."""
    found = settings.people.contact(contact) if isinstance(contact, str) else contact
    if found is None or found.backup is None:
        return None
    return settings.people.contact(found.backup)


def contact_public(contact: Contact | None, settings: Settings) -> dict[str, Any] | None:
    """A contact as the CLI, API and templates show it, with its backup's name and phone."""
    if contact is None:
        return None
    backup = backup_of(settings, contact)
    return {
        "id": contact.id,
        "name": contact.name,
        "roles": list(contact.roles),
        "email": contact.email,
        "phone": contact.phone,
        "chat": contact.chat,
        "backup": (
            {"id": backup.id, "name": backup.name, "phone": backup.phone} if backup else None
        ),
    }


def overview(conn: Connection | None, settings: Settings, now: float) -> dict[str, Any]:
    """Everything `nachtwacht oncall` and GET /api/v1/oncall show."""
    rotations = []
    for rotation in settings.people.rotations:
        line = _timeline(conn, settings, rotation.name, now)
        contact_id, override, (start, _end) = line.at(now)
        contact = settings.people.contact(contact_id) if contact_id else None
        until, upcoming = next_handoff(conn, settings, rotation.name, now)
        rotations.append(
            {
                "name": rotation.name,
                "type": rotation.type,
                "handoff": rotation.handoff,
                "on_call": contact_public(contact, settings),
                "since": iso(_since(override, start)),
                "until": iso(until),
                "override": override.public(settings, rotation.name) if override else None,
                "next": contact_public(upcoming, settings),
            }
        )
    roles = [
        {
            "role": role,
            "title": ROLE_TITLES[role],
            "contacts": [
                contact_public(c, settings) for c in settings.people.contacts if role in c.roles
            ],
        }
        for role in PROTOCOL_ROLES
    ]
    if not settings.people.rotations:
        # without rotations the on-call engineers are whoever has the role
        engineers = [c for c in settings.people.contacts if "oncall_engineer" in c.roles]
        roles.insert(
            0,
            {
                "role": "oncall_engineer",
                "title": ROLE_TITLES["oncall_engineer"],
                "contacts": [contact_public(c, settings) for c in engineers],
            },
        )
    return {
        "site": settings.site,
        "at": iso(now),
        "timezone": settings.timezone,
        "rotations": rotations,
        "roles": roles,
        "external": [e.model_dump() for e in settings.people.external],
    }


def _since(override: Override | None, shift_start: float) -> float | None:
    if override is not None:
        return override.starts_at
    return shift_start if math.isfinite(shift_start) else None


EPOCH_MIN, EPOCH_MAX = 0.0, 221_845_392_000.0  # 1970-01-01 .. 9000-01-01


def parse_time(value: str, zone: ZoneInfo, field: str = "at") -> float:
    """Epoch seconds from ISO 8601 or "YYYY-MM-DD HH:MM" (site time when no offset is given)."""
    text = value.strip()
    try:
        ts = float(text)  # epoch seconds, as the rest of the API takes them
    except ValueError:
        try:
            ts = to_ts(datetime.fromisoformat(text.replace("Z", "+00:00")), zone)
        except (ValueError, OverflowError):
            raise OncallError(
                f"{field}: '{value}' is not a time; use ISO 8601 or 'YYYY-MM-DD HH:MM' "
                f"(site time, {zone.key})",
                field,
            ) from None
    # turns are counted with datetimes, which end at 9999: a time past that (or nan) is no time
    if not EPOCH_MIN <= ts <= EPOCH_MAX:
        raise OncallError(f"{field}: must be between 1970 and 9000", field)
    return ts


def local_text(ts: float | None, zone: ZoneInfo) -> str:
    """A time as people on site read it: 'Thu 2026-12-24 22:00 CET'."""
    if ts is None or not math.isfinite(ts):
        return "-"
    return datetime.fromtimestamp(ts, UTC).astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z")
