"""Config models for people: contacts, roles, external support contacts and rotations."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nachtwacht.durations import Duration

# the protocol's roles (emergency-response-protocols.md, "Emergency Contact Information")
Role = Literal[
    "oncall_engineer",
    "technical_lead",
    "devops",
    "operations_manager",
    "management",
    "executives",
]
ROLES: tuple[str, ...] = Role.__args__  # type: ignore[attr-defined]
ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Contact(Strict):
    id: str = Field(pattern=ID_PATTERN, max_length=64)
    name: str = Field(min_length=1)
    roles: list[Role] = Field(default_factory=list)
    email: str | None = None
    phone: str | None = None
    chat: str | None = None  # a chat handle, e.g. @alice, mentioned in chat messages
    backup: str | None = None  # id of the contact paged when this one does not answer

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
            raise ValueError(f"'{value}' is not an email address")
        return value

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\+?[0-9][0-9 ()-]{5,}", value):
            raise ValueError(f"'{value}' is not a phone number; use international form +31...")
        return value


class ExternalContact(Strict):
    """Hosting provider, database support and the like: shown on incidents at the 1 h step."""

    id: str = Field(pattern=ID_PATTERN, max_length=64)
    kind: Literal["hosting", "database", "other"] = "other"
    provider: str
    emergency_number: str | None = None
    portal: str | None = None
    account_id: str | None = None
    contract_id: str | None = None
    email: str | None = None


class Override(Strict):
    contact: str
    start: datetime
    end: datetime

    @model_validator(mode="after")
    def _order(self) -> Override:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class Rotation(Strict):
    """Members take turns; the turn changes at `handoff` every day or every week."""

    name: str = Field(pattern=ID_PATTERN, max_length=64)
    type: Literal["weekly", "daily"] = "weekly"
    handoff: str = "mon 09:00"  # "HH:MM" for daily; "ddd HH:MM" for weekly
    start: date = date(2026, 1, 5)  # the first member's first turn starts on or after this date
    members: list[str] = Field(min_length=1)
    overrides: list[Override] = Field(default_factory=list)

    @model_validator(mode="after")
    def _handoff_shape(self) -> Rotation:
        day = r"(mon|tue|wed|thu|fri|sat|sun) "
        pattern = (
            rf"{day}([01]\d|2[0-3]):[0-5]\d"
            if self.type == "weekly"
            else r"([01]\d|2[0-3]):[0-5]\d"
        )
        if not re.fullmatch(pattern, self.handoff):
            example = "mon 09:00" if self.type == "weekly" else "09:00"
            raise ValueError(f"handoff '{self.handoff}' must look like '{example}' for {self.type}")
        return self


class VerificationSettings(Strict):
    """Confirm links that prove a contact's channels reach them (docs/people.md)."""

    # a confirmation older than this is stale, and the engine sends a new link once per period
    every: Duration = Field(default=90 * 86400.0, gt=0)
    # a link not followed within this is refused
    link_valid: Duration = Field(default=14 * 86400.0, gt=0)
    # false: no automatic re-verification (`nachtwacht contacts verify` still works)
    auto: bool = True
    # at each rotation handoff the incoming engineer gets a summary of what they take over
    handoff_summary: bool = True


class PeopleSettings(Strict):
    contacts: list[Contact] = Field(default_factory=list)
    external: list[ExternalContact] = Field(default_factory=list)
    rotations: list[Rotation] = Field(default_factory=list)
    verification: VerificationSettings = Field(default_factory=VerificationSettings)

    @model_validator(mode="after")
    def _references(self) -> PeopleSettings:
        ids = {c.id for c in self.contacts}
        for c in self.contacts:
            if c.backup is not None and c.backup not in ids:
                raise ValueError(f"contact '{c.id}': backup '{c.backup}' is not a contact")
        for r in self.rotations:
            for m in [*r.members, *(o.contact for o in r.overrides)]:
                if m not in ids:
                    raise ValueError(f"rotation '{r.name}': '{m}' is not a contact")
        return self

    def contact(self, contact_id: str) -> Contact | None:
        return next((c for c in self.contacts if c.id == contact_id), None)
