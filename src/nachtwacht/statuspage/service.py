"""What the status page's parts share: its error, its public names, its links, its words.

The page's logic lives beside this module, one part each: `notices` (drafts, approval,
publication, reminders), `subscribers` (double opt-in, unsubscribe, fan-out), `view` (what
the public page shows, cached) and `feed` (Atom). None of them imports a door.
"""

from __future__ import annotations

import json
from typing import Any

from nachtwacht.config.schema import Settings
from nachtwacht.problems import Problem

PUBLIC_STATUSES = ("investigating", "identified", "monitoring", "resolved")
# the incident's own status, in the page's vocabulary (statuspage.io's, which customers know)
FROM_INCIDENT = {
    "investigating": "investigating",
    "mitigating": "identified",
    "monitoring": "monitoring",
    "resolved": "resolved",
    "closed": "resolved",
}
STATUS_WORDS = {
    "investigating": "We are investigating the cause.",
    "identified": "We have found the cause and are applying a fix.",
    "monitoring": "A fix has been applied and we are monitoring the results.",
    "resolved": "The issue has been resolved.",
}
TITLE_MAX = 200
BODY_MAX = 4000


class StatusPageError(Problem):
    """A status-page request refused: a notice not found, already published, not yours."""


def title(settings: Settings) -> str:
    return settings.status_page.title or f"{settings.site} status"


def public_url(settings: Settings) -> str:
    """Where subscribers' links point: the page's own address."""
    page = settings.status_page
    if page.public_url:
        return page.public_url.rstrip("/")
    if page.host:
        return f"https://{page.host}"
    return settings.incidents.public_url.rstrip("/") + page.path


def public_components(settings: Settings, internal: str | None) -> list[str]:
    """The public names an internal component is shown under (none: it is not public)."""
    if internal is None:
        return []
    return [name for name, comps in settings.status_page.components.items() if internal in comps]


def check_text(value: str, field: str, limit: int, *, required: bool = True) -> str:
    value = value.strip()
    if required and not value:
        raise StatusPageError(f"{field} must not be empty", field)
    if len(value) > limit:
        raise StatusPageError(f"{field} is {len(value)} characters; at most {limit}", field)
    if "\x00" in value:
        raise StatusPageError(f"{field} contains a NUL character", field)
    return value


def check_status(value: str) -> str:
    if value not in PUBLIC_STATUSES:
        raise StatusPageError(
            f"status must be one of {', '.join(PUBLIC_STATUSES)}", "public_status"
        )
    return value


def check_components(settings: Settings, names: list[str]) -> list[str]:
    known = settings.status_page.components
    wrong = [n for n in names if n not in known]
    if wrong:
        raise StatusPageError(
            f"not a public component: {', '.join(wrong)} "
            f"(the page shows {', '.join(known) or 'none'})",
            "components",
        )
    return list(dict.fromkeys(names))


def notice_view(row: Any, *, internal: bool = False) -> dict[str, Any]:
    """A notice as the page, the feed and subscribers see it; `internal` adds the approvals."""
    out: dict[str, Any] = {
        "id": row["id"],
        "kind": row["kind"],
        "title": row["title"],
        "body": row["body"],
        "public_status": row["public_status"],
        "components": json.loads(row["components_json"] or "[]"),
        "published_at": row["published_at"],
    }
    if internal:
        out |= {
            "incident_id": row["incident_id"],
            "state": row["state"],
            "created_by": row["created_by"],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "approved_by": row["approved_by"],
            "remind_at": row["remind_at"],
        }
    return out
