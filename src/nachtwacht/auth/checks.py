"""What every auth module shares: `AuthError`, the default settings, and the checks of
usernames, roles and names typed by a person.

Every auth function takes a SQLAlchemy `Connection` (the caller owns the transaction) and `now`
from the caller's clock. Functions that change something write their own audit entry in the
same transaction, so the web and the CLI audit the same way.
"""

from __future__ import annotations

import re
from typing import Any

from nachtwacht.auth.models import (
    METRICS,
    ROLES,
    TOKEN_ROLES,
    AuthSettings,
    Role,
    UserRole,
)
from nachtwacht.problems import Problem

DEFAULTS = AuthSettings()


def auth_settings(settings: Any) -> AuthSettings:
    """The `auth:` section of the settings, or the defaults when there is none."""
    value = getattr(settings, "auth", None)
    return value if isinstance(value, AuthSettings) else DEFAULTS


USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")


class AuthError(Problem):
    """A request about users, sessions, tokens, keys or the audit log that cannot be done."""


def normalize_username(name: str) -> str:
    """Usernames are compared lower-case: `Alice` and `alice` are one account."""
    value = name.strip().lower()
    if not USERNAME.fullmatch(value):
        raise AuthError(
            f"'{name}' is not a valid username: 1-64 characters of a-z 0-9 . _ @ -, "
            "starting with a letter or digit",
            field="username",
        )
    return value


def check_role(role: str) -> UserRole:
    """A user's role. `metrics` is not one: a person who can log in can read what a viewer
    reads, so a scrape-only account would be a viewer with a misleading name."""
    if role == METRICS:
        raise AuthError(
            "the metrics role is for API tokens only (nachtwacht token create NAME --role "
            "metrics); a user's role is viewer, responder or admin",
            field="role",
        )
    if role not in ROLES:
        raise AuthError(f"unknown role '{role}'; use {', '.join(ROLES)}", field="role")
    return role


def check_token_role(role: str) -> Role:
    if role not in TOKEN_ROLES:
        raise AuthError(f"unknown role '{role}'; use {', '.join(TOKEN_ROLES)}", field="role")
    return role


def check_name(value: str, field: str = "name") -> str:
    text = value.strip()
    if not 1 <= len(text) <= 120:
        raise AuthError(f"the {field} must be 1-120 characters", field=field)
    return text


def clip(value: str | None, size: int) -> str | None:
    # PostgreSQL text cannot hold NUL; a username typed by an attacker may
    return None if value is None else value.replace("\x00", "\ufffd")[:size]
