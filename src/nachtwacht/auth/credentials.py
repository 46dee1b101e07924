"""What API tokens and ingest keys share: rows holding only a secret's hash, shown once,
audited on creation and revocation, touched (at most every TOUCH_EVERY) when used."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    Table,
    and_,
    insert,
    or_,
    select,
    update,
)

from nachtwacht.auth.audit import audit
from nachtwacht.auth.checks import AuthError
from nachtwacht.auth.passwords import new_secret, secret_hash
from nachtwacht.auth.sessions import TOUCH_EVERY
from nachtwacht.clock import iso
from nachtwacht.store.db import inserted_id


def touch(conn: Connection, table: Any, row_id: int, now: float) -> None:
    c = table.c
    conn.execute(
        update(table)
        .where(
            c.id == row_id,
            or_(c.last_used_at.is_(None), c.last_used_at <= now - TOUCH_EVERY),
        )
        .values(last_used_at=now)
    )


def secret_view(row: dict[str, Any], extra: str) -> dict[str, Any]:
    view = {
        "id": row["id"],
        "name": row["name"],
        extra: row[extra],
        "created_by": row["created_by"],
        "created_at": iso(row["created_at"]),
        "last_used_at": iso(row["last_used_at"]),
        "revoked_at": iso(row["revoked_at"]),
    }
    if "owner" in row:
        view["owner"] = row["owner"]
    return view


def create_secret(
    conn: Connection,
    table: Table,
    kind: str,
    name: str,
    hash_column: str,
    attribute: tuple[str, str],
    prefix: str,
    now: float,
    actor: str,
    ip: str | None,
    extra: dict[str, Any] | None = None,
    noted: dict[str, Any] | None = None,
) -> tuple[int, str]:
    """Insert a token-like row holding only the secret's hash; return its id and the secret.

    API tokens and ingest keys share this: shown once, stored as sha256, audited on creation.
    """
    secret = new_secret(prefix)
    field, value = attribute
    result = conn.execute(
        insert(table).values(
            name=name,
            created_by=actor[:120],
            created_at=now,
            **{hash_column: secret_hash(secret), field: value},
            **(extra or {}),
        )
    )
    row_id = inserted_id(result)
    detail = {"name": name, field: value, **(noted or {})}
    audit(conn, actor, f"{kind}.create", f"{kind}:{row_id}", detail, ip, now)
    return row_id, secret


def active_rows(table: Table, include_revoked: bool) -> Select:
    query = select(table).order_by(table.c.id)
    return query if include_revoked else query.where(table.c.revoked_at.is_(None))


def revoke_row(
    conn: Connection,
    table: Any,
    kind: str,
    row_id: int,
    now: float,
    actor: str,
    ip: str | None,
    view: Select,
    extra: str,
) -> dict[str, Any]:
    """Revoke one token-like row (once; a second time only answers) and return its view, read
    with `view` (a select of `table`, maybe joined) and shown with its `extra` column."""
    c = table.c
    row = conn.execute(select(table).where(c.id == row_id)).mappings().first()
    label = kind.replace("_", " ")
    if row is None:
        raise AuthError(f"no {label} #{row_id}", kind="not_found", field="id")
    if row["revoked_at"] is None:
        conn.execute(
            update(table).where(and_(c.id == row_id, c.revoked_at.is_(None))).values(revoked_at=now)
        )
        audit(conn, actor, f"{kind}.revoke", f"{kind}:{row_id}", {"name": row["name"]}, ip, now)
    row = conn.execute(view.where(c.id == row_id)).mappings().one()
    return secret_view(dict(row), extra)
