"""Access control: roles, the `auth:` settings and the API's request bodies.

The tables (users, sessions, api_tokens, ingest_keys, audit_log) live with every other table in
`nachtwacht.store.tables`, so one Alembic metadata sees them all; they are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from nachtwacht.durations import Duration
from nachtwacht.store.tables import (
    api_tokens,
    audit_log,
    ingest_keys,
    login_failures,
    sessions,
    users,
)

__all__ = [
    "METRICS",
    "ROLES",
    "SCOPES",
    "TOKEN_ROLES",
    "AuthSettings",
    "Principal",
    "Role",
    "Scope",
    "UserRole",
    "api_tokens",
    "lesser_role",
    "login_failures",
    "audit_log",
    "ingest_keys",
    "role_allows",
    "sessions",
    "users",
]

UserRole = Literal["viewer", "responder", "admin"]
# `metrics` is for API tokens only (a Prometheus scrape): it may read /metrics and nothing else.
# It is outside the viewer < responder < admin ladder, not below it: a viewer reads every
# contact's phone number, a scrape needs none of that. Every user role may scrape too.
Role = Literal["viewer", "responder", "admin", "metrics"]
Scope = Literal["alerts", "errors", "all"]
METRICS: Role = "metrics"
# Ordered: each role may do everything the roles before it may.
ROLES: tuple[UserRole, ...] = ("viewer", "responder", "admin")
# what a token may have: a user's roles, and the scrape-only one
TOKEN_ROLES: tuple[Role, ...] = (*ROLES, METRICS)
SCOPES: tuple[Scope, ...] = ("alerts", "errors", "all")


def role_allows(have: str, need: str) -> bool:
    """Whether a principal with role `have` may do what needs role `need`.

    `metrics` allows only what needs `metrics` (the scrape), and whatever needs `metrics` is
    allowed to every user role as well."""
    if need == METRICS:
        return have == METRICS or have in ROLES
    if have not in ROLES or need not in ROLES:
        return False
    return ROLES.index(have) >= ROLES.index(need)


def lesser_role(a: str, b: str) -> Role:
    """The weaker of two roles; an unknown role counts as the weakest user role there is.

    `metrics` is weaker than every other: a metrics token of an admin stays a metrics token."""
    if METRICS in (a, b):
        return METRICS
    rank: dict[str, int] = {role: i for i, role in enumerate(ROLES)}
    return ROLES[min(rank.get(a, 0), rank.get(b, 0))]


class AuthSettings(BaseModel):
    """`auth:` in nachtwacht.yaml. Every key has a default that suits one small team."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # wrong passwords for one username from one address within `lockout_for` before that
    # address is locked out of that account for `lockout_for` (other addresses are not)
    lockout_after: int = Field(default=5, ge=1, le=100)
    lockout_for: Duration = 15 * 60.0
    # wrong passwords from one address (any usernames) per `ip_window` before it must wait
    ip_max_failures: int = Field(default=10, ge=1, le=10_000)
    ip_window: Duration = 60.0
    # a session ends after `session_idle` without a request, and at the latest `session_max`
    # after login: a responder's phone stays logged in through a night, not for ever
    session_idle: Duration = 24 * 3600.0
    session_max: Duration = 7 * 86400.0
    min_password_length: int = Field(default=10, ge=8, le=128)


@dataclass(frozen=True)
class Principal:
    """Who is asking: a logged-in user (cookie session) or an API token."""

    kind: Literal["user", "token"]
    name: str  # the username, or "token:<name>" for an API token
    role: Role  # for a token: its own role, capped at its owner's current role
    id: int  # the user's id or the token's id
    session_id: int | None = None
    csrf_token: str | None = None
    owner_id: int | None = None  # a token's owner (None: a CLI token without --owner)
    owner: str | None = None

    def allows(self, need: str) -> bool:
        return role_allows(self.role, need)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "kind": self.kind,
            "name": self.name,
            "role": self.role,
            "session_id": self.session_id,
            "csrf_token": self.csrf_token,
        }
        if self.kind == "token":
            out["owner"] = self.owner
        return out

    @property
    def user_id(self) -> int | None:
        """The user this principal acts for: the user, or a token's owner."""
        return self.id if self.kind == "user" else self.owner_id


# -- request bodies --------------------------------------------------------------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginIn(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class UserIn(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    role: UserRole = "viewer"


class PasswordIn(Strict):
    password: str = Field(min_length=1, max_length=1024)
    # needed when users change their own password: a stolen session cannot take the account
    current_password: str | None = Field(default=None, max_length=1024)


class TokenIn(Strict):
    name: str = Field(min_length=1, max_length=120)
    role: Role = "viewer"


class IngestKeyIn(Strict):
    name: str = Field(min_length=1, max_length=120)
    scope: Scope = "all"
