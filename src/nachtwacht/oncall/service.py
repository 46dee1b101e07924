"""Who is on call, and who a policy target means right now.

(First version: targets by role and contact; rotations are being written.)
"""

from __future__ import annotations

from sqlalchemy import Connection

from nachtwacht.config.schema import Settings
from nachtwacht.oncall.models import Contact


def resolve_target(
    conn: Connection, settings: Settings, target: str, now: float
) -> list[Contact]:
    """The contacts a policy target names at `now`.

    `oncall`: whoever is on call in each rotation (contacts with the role oncall_engineer when
    there are no rotations); `oncall:R`: rotation R; `role:X`: every contact with role X;
    `contact:ID`: that contact. `external:` and `channel:` targets name no contacts.
    """
    people = settings.people
    kind, _, ref = target.partition(":")
    if kind == "contact":
        found = people.contact(ref)
        return [found] if found else []
    if kind == "role":
        return [c for c in people.contacts if ref in c.roles]
    if kind == "oncall":
        return [c for c in people.contacts if "oncall_engineer" in c.roles]
    return []


def external_contacts(settings: Settings, which: str | None) -> list:
    """External support contacts by id or kind (all when `which` is None)."""
    return [e for e in settings.people.external if which in (None, e.id, e.kind)]
