"""Incident states, event kinds and roles, shared by service, API and CLI; the config models
for escalation policies, with the protocol's matrix as the default (the `incidents:` section).

Config schema pieces import only foundation and other `models` modules (tests/import_contract.py):
notify and config read these without depending on the incident service.
"""

from __future__ import annotations

import re
from typing import Literal, TypeGuard

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nachtwacht.durations import Duration

STATUSES = ("investigating", "mitigating", "monitoring", "resolved", "closed")
OPEN_STATUSES = ("investigating", "mitigating", "monitoring")
Status = Literal["investigating", "mitigating", "monitoring", "resolved", "closed"]
Role = Literal["commander", "responder"]
Severity = Literal[1, 2, 3]


def is_severity(value: int) -> TypeGuard[Severity]:
    return value in (1, 2, 3)


# every kind of timeline entry
EVENT_KINDS = (
    "detected",  # opened from an alert
    "declared",  # opened by hand
    "alert",  # an alert joined, resolved, or was muted
    "notification_queued",
    "notification_sent",
    "notification_failed",
    "notification_deferred",  # held by a rate limit, with the time it goes out
    "notification_withdrawn",  # queued, then cancelled: an ack or resolution made it untrue
    "not_delivered",  # a page that no configured channel could carry to someone it was for
    "acknowledged",
    "status",
    "severity",
    "assigned",
    "escalated",
    "breach",
    "update",  # a status update was posted
    "update_overdue",
    "note",
    "resolved",
    "closed",
    "reopened",
    "external_support",
    "customer_communication",
    "security",  # a response to a security finding: sessions ended
    "security_block",  # an address blocked (only once the firewall took it)
    "security_block_failed",
    "security_unblock",
)


def describe_target(severity: int) -> str:
    """The response target in words (incidents/sla.py computes it); messages quote it."""
    return {
        1: "15 minutes, at any hour",
        2: "1 hour in business hours, 2 hours outside",
        3: "4 business hours (next business day when raised outside business hours)",
    }[severity]


def response_overdue(
    acknowledged_at: float | None,
    response_due_at: float,
    now: float,
    resolved_at: float | None = None,
) -> bool:
    """Nobody acknowledged the open incident and its response target has passed (a resolved
    incident is overdue no more: sla.response_met says whether its target was met)."""
    return acknowledged_at is None and resolved_at is None and now > response_due_at


def response_label(acknowledged: bool, overdue: bool, is_open: bool = True) -> str:
    """An incident's response in one word or two, as `incident list` and `status` show it."""
    if acknowledged:
        return "acked"
    if not is_open:
        return "not acked"  # resolved without an ack: history, not an alarm
    return "OVERDUE" if overdue else "unacked"


# S1 and S2 incidents are resolved only after the restoration checklist (checklist/gate.py)
CHECKLIST_SEVERITIES = (1, 2)


def needs_checklist(severity: int) -> bool:
    """Whether resolving an incident of this severity needs the restoration checklist."""
    return severity in CHECKLIST_SEVERITIES


# oncall | oncall:<rotation> | role:<role> | contact:<id> | external:<id or kind> | channel:<name>
TARGET = re.compile(r"^(oncall(:[a-z0-9_.-]+)?|(role|contact|external|channel):[a-z0-9_.-]+)$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EscalationStep(Strict):
    after: Duration  # elapsed since detection
    notify: list[str] = Field(default_factory=list)
    # repeat this step's pages every `repeat` until the incident is acknowledged
    repeat: Duration | None = None
    # after this many unanswered pages, page each target's backup contact as well
    backup_after: int | None = Field(default=None, ge=1)
    action: Literal["external_support", "customer_communication"] | None = None
    description: str = ""

    @field_validator("notify")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        for target in value:
            if not TARGET.match(target):
                raise ValueError(
                    f"'{target}' is not a target; use oncall, oncall:ROTATION, role:ROLE, "
                    "contact:ID, external:ID or channel:NAME"
                )
        return value


class EscalationPolicy(Strict):
    steps: list[EscalationStep] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> EscalationPolicy:
        afters = [s.after for s in self.steps]
        if afters != sorted(afters):
            raise ValueError("steps must be in order of `after`")
        return self


def protocol_matrix() -> EscalationPolicy:
    """The escalation matrix of emergency-response-protocols.md, counted from detection."""
    return EscalationPolicy(
        steps=[
            EscalationStep(
                after=0,
                notify=["oncall"],
                repeat=300,
                backup_after=2,
                description="Initial response and stabilisation: on-call engineer",
            ),
            EscalationStep(
                after=15 * 60,
                notify=["role:technical_lead"],
                description="Technical lead notification",
            ),
            EscalationStep(
                after=30 * 60, notify=["role:management"], description="Management notification"
            ),
            EscalationStep(
                after=3600,
                notify=["role:technical_lead"],
                action="external_support",
                description="External support engagement",
            ),
            EscalationStep(
                after=2 * 3600,
                notify=["role:executives"],
                description="Executive notification",
            ),
            EscalationStep(
                after=4 * 3600,
                notify=["role:management"],
                action="customer_communication",
                description="Customer and stakeholder communication; consider disaster recovery",
            ),
        ]
    )


# named, not lambdas: mypy infers a lambda's dict as dict[int, ...], not keyed by Severity
def _protocol_for_each() -> dict[Severity, str]:
    return {1: "protocol", 2: "protocol", 3: "protocol"}


def _update_every() -> dict[Severity, Duration]:
    return {1: 1800.0, 2: 3600.0, 3: 4 * 3600.0}


class IncidentSettings(Strict):
    policies: dict[str, EscalationPolicy] = Field(
        default_factory=lambda: {"protocol": protocol_matrix()}
    )
    # which policy each severity uses
    severity_policy: dict[Severity, str] = Field(default_factory=_protocol_for_each)
    # how often the commander owes a status update, per severity
    update_every: dict[Severity, Duration] = Field(default_factory=_update_every)
    # the address responders reach this server at, for acknowledge links in notifications;
    # unset, it is this server's own `server.host:port` (filled in by Settings)
    public_url: str = ""

    @model_validator(mode="after")
    def _known_policies(self) -> IncidentSettings:
        if "protocol" not in self.policies:
            # user policies add to the protocol's default rather than replace it
            object.__setattr__(self, "policies", {"protocol": protocol_matrix(), **self.policies})
        for severity, name in self.severity_policy.items():
            if name not in self.policies:
                raise ValueError(f"severity_policy.{severity}: no policy named '{name}'")
        return self

    def policy_for(self, severity: int) -> tuple[str, EscalationPolicy]:
        name = self.severity_policy.get(severity, "protocol")  # type: ignore[call-overload]
        return name, self.policies[name]
