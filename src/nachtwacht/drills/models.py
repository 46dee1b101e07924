"""Config models of `drills:` in nachtwacht.yaml, and the shape of a drill scenario.

The schedule is the protocol's "Testing and Training": a monthly 30-minute test and a quarterly
2-hour full simulation. The targets a drill is measured against come from the protocol too:
the response target is the severity's (incidents/sla.py), the first status update is owed by
the severity's update cadence (`incidents.update_every`); the rest are here.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nachtwacht.durations import Duration
from nachtwacht.incidents.models import Severity

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DrillSchedule(Strict):
    every: Literal["monthly", "quarterly"]
    # how long the exercise is planned for: the reminder says so
    duration: Duration
    # the scenario the reminder proposes (`nachtwacht drill run SCENARIO`)
    scenario: str = "service-outage"
    description: str = ""


def _schedules() -> dict[str, DrillSchedule]:
    return {
        "monthly": DrillSchedule(
            every="monthly",
            duration=1800.0,
            scenario="service-outage",
            description="Monthly test (30 minutes): practise the emergency communication, "
            "check that pages reach the on-call engineer and the contacts answer",
        ),
        "quarterly": DrillSchedule(
            every="quarterly",
            duration=7200.0,
            scenario="database-down",
            description="Quarterly test (2 hours): a full emergency response simulation, "
            "runbook, restoration checklist and report",
        ),
    }


def _mitigate_within() -> dict[Severity, Duration]:
    # S1: the protocol's immediate stabilisation ends at minute 15; S2/S3: their response target
    return {1: 900.0, 2: 3600.0, 3: 4 * 3600.0}


def _resolve_within() -> dict[Severity, Duration]:
    # S1: before the matrix engages external support (1 hour); S2: before customers are told
    # (4 hours); S3: within a day
    return {1: 3600.0, 2: 4 * 3600.0, 3: 86400.0}


class DrillSettings(Strict):
    schedules: dict[str, DrillSchedule] = Field(default_factory=_schedules)
    # who is reminded that a drill is due: policy targets (the protocol's document owner)
    remind: list[str] = Field(default_factory=lambda: ["role:operations_manager"])
    # how often the engine ends drills whose incident resolved and looks whether one is due
    check_every: Duration = 60.0
    # the first page delivered within this of detection (the protocol's classification step
    # ends at minute 5, and the first escalation step pages at once)
    page_within: Duration = 300.0
    # a drill still running after this is ended (its incident resolved, its figures taken):
    # before the matrix's 4-hour step, the one that drafts a notice to customers
    max_duration: Duration = 3 * 3600.0
    mitigate_within: dict[Severity, Duration] = Field(default_factory=_mitigate_within)
    resolve_within: dict[Severity, Duration] = Field(default_factory=_resolve_within)

    @field_validator("schedules")
    @classmethod
    def _names(cls, value: dict[str, DrillSchedule]) -> dict[str, DrillSchedule]:
        for name in value:
            if not NAME.match(name) or name == "adhoc":
                raise ValueError(
                    f"schedule name '{name}' must be lowercase letters, digits, - or _"
                )
        return value


class ScenarioSignal(Strict):
    """One synthetic alert, as the named source would raise it."""

    source: Literal["probe", "alertmanager", "api", "security", "nachtwacht"] = "probe"
    title: str = Field(min_length=1, max_length=200)
    component: str = Field(min_length=1, max_length=120)
    message: str = Field("", max_length=2000)
    labels: dict[str, str] = Field(default_factory=dict)


class Scenario(Strict):
    """A built-in (or user) drill: which fault it injects and which procedure it practises."""

    name: str
    title: str = Field(min_length=1, max_length=200)
    procedure: str  # the protocol's section it practises
    severity: Severity
    description: str = ""
    signals: list[ScenarioSignal] = Field(min_length=1, max_length=10)
    runbook: str | None = None
    # runbook steps that may run for real in a drill, and only when confirmed (`--yes`): every
    # other step is simulated, never executed (a drill never touches production by itself)
    real_steps: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("a scenario name is lowercase letters, digits, - or _")
        return value
