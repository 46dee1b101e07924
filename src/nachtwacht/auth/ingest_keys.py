"""Ingest keys: the keys senders of alerts, events and logs present, one scope each."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Connection,
    select,
)

from nachtwacht.auth.checks import AuthError, check_name
from nachtwacht.auth.credentials import active_rows, create_secret, revoke_row, secret_view, touch
from nachtwacht.auth.models import (
    SCOPES,
)
from nachtwacht.auth.passwords import secret_hash
from nachtwacht.store import tables as t

INGEST_PREFIX = "nwk_"


def create_ingest_key(
    conn: Connection, name: str, scope: str, now: float, *, actor: str, ip: str | None = None
) -> dict[str, Any]:
    """A new ingest key; the result's `key` is the only time the plaintext exists."""
    name = check_name(name)
    if scope not in SCOPES:
        raise AuthError(f"unknown scope '{scope}'; use {', '.join(SCOPES)}", field="scope")
    key_id, key = create_secret(
        conn, t.ingest_keys, "ingest_key", name, "key_hash", ("scope", scope), INGEST_PREFIX,
        now, actor, ip,
    )  # fmt: skip
    row = conn.execute(select(t.ingest_keys).where(t.ingest_keys.c.id == key_id)).mappings().one()
    return {**secret_view(dict(row), "scope"), "key": key}


def list_ingest_keys(conn: Connection, *, include_revoked: bool = False) -> list[dict[str, Any]]:
    query = active_rows(t.ingest_keys, include_revoked)
    return [secret_view(dict(r), "scope") for r in conn.execute(query).mappings()]


def revoke_ingest_key(
    conn: Connection, key_id: int, now: float, *, actor: str, ip: str | None = None
) -> dict[str, Any]:
    view = select(t.ingest_keys)
    return revoke_row(conn, t.ingest_keys, "ingest_key", key_id, now, actor, ip, view, "scope")


NO_INGEST_KEY = "an ingest key is required (Authorization: Bearer <key> or ?key=)"


def resolve_ingest_key(conn: Connection, key: str | None, scope: str, now: float) -> dict[str, Any]:
    """The key's {id, name, scope} when it may send `scope`; AuthError 401/403 otherwise."""
    if not key:
        raise AuthError(NO_INGEST_KEY, kind="unauthenticated")
    c = t.ingest_keys.c
    row = None
    if key.startswith(INGEST_PREFIX) and len(key) <= 200:
        query = select(c.id, c.name, c.scope).where(
            c.key_hash == secret_hash(key), c.revoked_at.is_(None)
        )
        row = conn.execute(query).mappings().first()
    if row is None:
        raise AuthError("unknown or revoked ingest key", "key", "unauthenticated")
    if row["scope"] not in (scope, "all"):
        raise AuthError(
            f"ingest key '{row['name']}' may send {row['scope']}, not {scope}", "key", "forbidden"
        )
    touch(conn, t.ingest_keys, row["id"], now)
    return dict(row)
