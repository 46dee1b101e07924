"""Hashing: passwords with argon2id (`HASHER`), and the random secrets behind session
cookies, API tokens and ingest keys.

Session cookies, API tokens and ingest keys are 256-bit random strings stored as sha256 hex:
they cannot be guessed, so a slow hash would only cost time on every request, and a copy of
the table holds nothing that can be replayed.
"""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from nachtwacht.auth.checks import DEFAULTS, AuthError
from nachtwacht.auth.models import (
    AuthSettings,
)

HASHER = PasswordHasher()  # RFC 9106 low-memory profile: argon2id, 64 MiB, t=3, p=4


MAX_PASSWORD = 1024  # argon2 accepts more, but hashing megabytes is a cheap denial of service


_dummy: dict[int, str] = {}


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def burn_time(password: str) -> None:
    """Verify against a throwaway hash, so an unknown username costs as long as a known one."""
    key = id(HASHER)
    if key not in _dummy:
        _dummy[key] = HASHER.hash(secrets.token_urlsafe(16))
    verify_password(_dummy[key], password)


def new_secret(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_password(password: str, settings: AuthSettings = DEFAULTS) -> None:
    if len(password) < settings.min_password_length:
        raise AuthError(
            f"the password must be at least {settings.min_password_length} characters",
            field="password",
        )
    if len(password) > MAX_PASSWORD:
        raise AuthError(f"the password must be at most {MAX_PASSWORD} characters", field="password")
