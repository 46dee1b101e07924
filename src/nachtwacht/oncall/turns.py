"""Rotation turns and overrides in time: who a rotation's regular turn belongs to at a moment,
the overrides that replace it, and the timeline of both. oncall/service.py answers questions
with it (who is on call, the next handoff, a schedule) and keeps the overrides table.

A rotation's turns are wall-clock turns: a weekly rotation with handoff "mon 09:00" hands over
at 09:00 local time every Monday, so a turn across a DST change lasts 167 or 169 hours. Turn k
(k = 0 from the first handoff at or after 00:00 local of the rotation's `start` date) belongs to
member k mod n. Before that first handoff the rotation has nobody on call.

Overrides: when several cover the same moment the most recently created wins; run-time
overrides count as newer than the config's, and later entries in either as newer than earlier
ones. An override naming a contact that is no longer in the config is ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select

from nachtwacht.clock import iso
from nachtwacht.config.schema import Settings
from nachtwacht.oncall.models import Rotation
from nachtwacht.store import tables as t

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# the loops that walk turns and overrides stop after this many steps, whatever the data
MAX_STEPS = 10_000


def period(rotation: Rotation) -> timedelta:
    return timedelta(days=7 if rotation.type == "weekly" else 1)


def _first_handoff(rotation: Rotation) -> datetime:
    """The naive local datetime of turn 0: the first handoff at or after 00:00 of `start`."""
    if rotation.type == "weekly":
        day, _, clock = rotation.handoff.partition(" ")
        offset = (WEEKDAYS.index(day) - rotation.start.weekday()) % 7
        first: date = rotation.start + timedelta(days=offset)
    else:
        clock = rotation.handoff
        first = rotation.start
    return datetime.combine(first, time.fromisoformat(clock))


def _local_to_ts(naive: datetime, zone: ZoneInfo) -> float:
    # fold=0: an ambiguous handoff (the repeated hour in autumn) happens at its first
    # occurrence; a handoff inside the spring gap moves forward by the gap (02:30 -> 03:30).
    return naive.replace(tzinfo=zone).timestamp()


def _turn_start(rotation: Rotation, zone: ZoneInfo, k: int) -> float:
    return _local_to_ts(_first_handoff(rotation) + k * period(rotation), zone)


def _turn_index(rotation: Rotation, zone: ZoneInfo, ts: float) -> int:
    """The k with turn_start(k) <= ts < turn_start(k + 1) (negative before the first turn)."""
    local = datetime.fromtimestamp(ts, zone).replace(tzinfo=None)
    span = period(rotation).total_seconds()
    # local wall time gives the right turn but for an hour around a DST change; correct it
    k = math.floor((local - _first_handoff(rotation)).total_seconds() / span)
    while _turn_start(rotation, zone, k) > ts:
        k -= 1
    while _turn_start(rotation, zone, k + 1) <= ts:
        k += 1
    return k


def shift_at(settings: Settings, rotation: Rotation, ts: float) -> tuple[str | None, float, float]:
    """The regular turn at `ts`: (member id, turn start, turn end), overrides not applied.

    Before the rotation's first turn the member is None and the "turn" is the time before the
    first handoff: (None, -inf, first handoff).
    """
    zone = settings.zone
    k = _turn_index(rotation, zone, ts)
    if k < 0:
        return None, -math.inf, _turn_start(rotation, zone, 0)
    member = rotation.members[k % len(rotation.members)]
    return member, _turn_start(rotation, zone, k), _turn_start(rotation, zone, k + 1)


# -- overrides ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Override:
    contact: str
    starts_at: float
    ends_at: float
    rank: tuple[int, int]  # higher wins: (0, index) from the config, (1, id) from the store
    id: int | None
    source: str  # "config" or "store"
    created_by: str

    def covers(self, ts: float) -> bool:
        return self.starts_at <= ts < self.ends_at

    def public(self, settings: Settings, rotation: str) -> dict[str, Any]:
        contact = settings.people.contact(self.contact)
        return {
            "id": self.id,
            "source": self.source,
            "rotation": rotation,
            "contact": self.contact,
            "name": contact.name if contact else None,
            "starts_at": iso(self.starts_at),
            "ends_at": iso(self.ends_at),
            "created_by": self.created_by,
        }


def to_ts(value: datetime, zone: ZoneInfo) -> float:
    """Epoch seconds of a datetime; one without an offset is site time."""
    return (value if value.tzinfo else value.replace(tzinfo=zone)).timestamp()


def load_overrides(
    conn: Connection | None,
    settings: Settings,
    rotation: Rotation,
    since: float = -math.inf,
    until: float = math.inf,
) -> list[Override]:
    """Overrides of `rotation` overlapping [since, until), lowest priority first."""
    zone = settings.zone
    found = [
        Override(
            o.contact,
            to_ts(o.start, zone),
            to_ts(o.end, zone),
            (0, i),
            None,
            "config",
            "config",
        )
        for i, o in enumerate(rotation.overrides)
    ]
    if conn is not None:
        query = select(t.oncall_overrides).where(t.oncall_overrides.c.rotation == rotation.name)
        if since > -math.inf:
            query = query.where(t.oncall_overrides.c.ends_at > since)
        if until < math.inf:
            query = query.where(t.oncall_overrides.c.starts_at < until)
        for row in conn.execute(query).mappings():
            found.append(
                Override(
                    row["contact"],
                    row["starts_at"],
                    row["ends_at"],
                    (1, row["id"]),
                    row["id"],
                    "store",
                    row["created_by"],
                )
            )
    known = {c.id for c in settings.people.contacts}
    live = [o for o in found if o.contact in known and o.ends_at > since and o.starts_at < until]
    return sorted(live, key=lambda o: o.rank)


class Timeline:
    """One rotation with its overrides loaded once, answering "who, and until when"."""

    def __init__(self, settings: Settings, rotation: Rotation, overrides: list[Override]) -> None:
        self.settings = settings
        self.rotation = rotation
        self.overrides = overrides  # lowest priority first

    def at(self, ts: float) -> tuple[str | None, Override | None, tuple[float, float]]:
        """(contact id, the winning override or None, the regular turn's start and end)."""
        member, start, end = shift_at(self.settings, self.rotation, ts)
        winner = next((o for o in reversed(self.overrides) if o.covers(ts)), None)
        return (winner.contact if winner else member), winner, (start, end)

    def next_boundary(self, ts: float) -> float:
        """The first moment after `ts` at which the answer of `at` may change."""
        _, _, end = shift_at(self.settings, self.rotation, ts)
        edges = [end]
        for o in self.overrides:
            edges.extend(e for e in (o.starts_at, o.ends_at) if e > ts)
        return min(edges)

    def segments(self, since: float, until: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        ts = since
        for _ in range(MAX_STEPS):
            if ts >= until:
                break
            contact, override, (start, end) = self.at(ts)
            nxt = min(self.next_boundary(ts), until)
            key = (contact, override.rank if override else None, start)
            if out and out[-1]["_key"] == key:
                out[-1]["_end"] = nxt
            else:
                out.append(
                    {
                        "_key": key,
                        "_start": ts,
                        "_end": nxt,
                        "contact": contact,
                        "member": shift_at(self.settings, self.rotation, ts)[0],
                        "shift": (start, end),
                        "override": override,
                    }
                )
            ts = nxt
        return [self._public(s) for s in out]

    def _public(self, seg: dict[str, Any]) -> dict[str, Any]:
        contact = self.settings.people.contact(seg["contact"]) if seg["contact"] else None
        override: Override | None = seg["override"]
        start, end = seg["shift"]
        return {
            "start": iso(seg["_start"]),
            "end": iso(seg["_end"]),
            "start_ts": seg["_start"],
            "end_ts": seg["_end"],
            "contact": seg["contact"],
            "name": contact.name if contact else None,
            "member": seg["member"],
            "shift_start": iso(start) if start > -math.inf else None,
            "shift_end": iso(end),
            "override": override.public(self.settings, self.rotation.name) if override else None,
        }
