"""Config models of `reviews:` in nachtwacht.yaml (the review deadlines and the checklist)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from nachtwacht.durations import Duration

# the protocol's Service Restoration Checklist, in its order
ChecklistItem = Literal[
    "database",
    "web",
    "dashboard",
    "analytics",
    "performance",
    "api",
    "caches",
    "alerts",
    "integrity",
    "access",
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChecklistSettings(Strict):
    """How `nachtwacht verify` reaches what it checks."""

    # where the dashboard answers; default http://<server.host>:<server.port>
    url: str | None = None
    # who receives the alert-delivery test; default whoever is on call now, else the first contact
    test_contact: str | None = None
    # how long the alert-delivery test waits for the outbox to send
    notify_wait: Duration = 15.0
    # per HTTP request and per probe the checklist runs
    timeout: Duration = 10.0
    # a whole item gives up after this long (it fails, it never hangs the checklist)
    item_timeout: Duration = 60.0
    # items that do not apply to this site: reported as skipped, never as passed
    skip: list[ChecklistItem] = Field(default_factory=list)
    # GET paths under /api/v1 the "every API answering" item leaves out
    api_exclude: list[str] = Field(default_factory=list)


# named, not a lambda: mypy infers a lambda's list as list[int], not list[Literal[1, 2, 3]]
def _s1_and_s2() -> list[Literal[1, 2, 3]]:
    return [1, 2]


class ReviewSettings(Strict):
    checklist: ChecklistSettings = Field(default_factory=ChecklistSettings)
    # the protocol: immediate analysis within 24 hours, formal review within 1 week (after
    # resolution); the commander is reminded when a deadline passes with the fields empty
    analysis_within: Duration = 86400.0
    review_within: Duration = 7 * 86400.0
    # which severities owe a review (and get the deadline reminders)
    remind_severities: list[Literal[1, 2, 3]] = Field(default_factory=_s1_and_s2)
    # an overdue follow-up reminds its owner again after this long, while it stays open
    followup_repeat: Duration = 86400.0
    # how often the engine looks for due reminders
    check_every: Duration = 60.0
