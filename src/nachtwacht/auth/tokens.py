"""API tokens: create, list, revoke, and resolve one to the principal it acts as."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    select,
)

from nachtwacht.auth.checks import AuthError, check_name, check_token_role
from nachtwacht.auth.credentials import create_secret, revoke_row, secret_view, touch
from nachtwacht.auth.models import (
    Principal,
    lesser_role,
    role_allows,
)
from nachtwacht.auth.passwords import secret_hash
from nachtwacht.auth.users import need_user
from nachtwacht.store import paging
from nachtwacht.store import tables as t

TOKEN_PREFIX = "nwt_"


def create_token(
    conn: Connection,
    name: str,
    role: str,
    now: float,
    *,
    actor: str,
    ip: str | None = None,
    owner: str | int | None = None,
) -> dict[str, Any]:
    """A new API token; the result's `token` is the only time the plaintext exists.

    `owner` (a username or a user id) is the user the token acts for: it works only while that
    user exists and is enabled, and never with more than the user's role at the time of the
    request. Without an owner (the CLI's default) the token keeps its role until revoked.
    """
    name, role = check_name(name), check_token_role(role)
    owner_id: int | None = None
    noted: dict[str, Any] = {}
    if owner is not None:
        user = (
            need_user(conn, owner)
            if isinstance(owner, str)
            else conn.execute(select(t.users).where(t.users.c.id == owner)).mappings().first()
        )
        if user is None or user["disabled"]:
            raise AuthError("a token's owner must be an enabled user", field="owner")
        if not role_allows(user["role"], role):
            raise AuthError(
                f"{user['username']} has the {user['role']} role: a token of theirs cannot have "
                f"the {role} role",
                field="role",
            )
        owner_id = int(user["id"])
        noted = {"owner": user["username"]}
    token_id, token = create_secret(
        conn,
        t.api_tokens,
        "token",
        name,
        "token_hash",
        ("role", role),
        TOKEN_PREFIX,
        now,
        actor,
        ip,
        {"user_id": owner_id},
        noted,
    )
    [view] = [
        secret_view(dict(r), "role")
        for r in conn.execute(tokens_query(True).where(t.api_tokens.c.id == token_id)).mappings()
    ]
    return {**view, "token": token}


def tokens_query(include_revoked: bool) -> Select:
    a, u = t.api_tokens, t.users
    query = (
        select(a, u.c.username.label("owner"))
        .select_from(a.outerjoin(u, u.c.id == a.c.user_id))
        .order_by(a.c.id)
    )
    return query if include_revoked else query.where(a.c.revoked_at.is_(None))


def list_tokens(
    conn: Connection, *, include_revoked: bool = False, limit: int | None = None, offset: int = 0
) -> list[dict[str, Any]]:
    query = paging.window(tokens_query(include_revoked), limit, offset)
    return [secret_view(dict(r), "role") for r in conn.execute(query).mappings()]


def count_tokens(conn: Connection, *, include_revoked: bool = False) -> int:
    return paging.count(conn, tokens_query(include_revoked))


def revoke_token(
    conn: Connection, token_id: int, now: float, *, actor: str, ip: str | None = None
) -> dict[str, Any]:
    return revoke_row(
        conn, t.api_tokens, "token", token_id, now, actor, ip, tokens_query(True), "role"
    )


def resolve_token(conn: Connection, token: str, now: float) -> Principal | None:
    """The principal of an API token, or None (unknown, revoked, or its owner is gone or
    disabled). Read with its owner on every request, in the same query: there is no cache to
    outlive a disable, a demotion or a deletion."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    c, u = t.api_tokens.c, t.users.c
    query = (
        select(c.id, c.name, c.role, c.user_id, u.username, u.role.label("owner_role"), u.disabled)
        .select_from(t.api_tokens.outerjoin(t.users, u.id == c.user_id))
        .where(c.token_hash == secret_hash(token), c.revoked_at.is_(None))
    )
    row = conn.execute(query).mappings().first()
    if row is None:
        return None
    role = row["role"]
    if row["user_id"] is not None:
        if row["username"] is None or row["disabled"]:
            return None
        role = lesser_role(role, row["owner_role"])
    touch(conn, t.api_tokens, row["id"], now)
    return Principal(
        kind="token",
        name=f"token:{row['name']}",
        role=role,
        id=row["id"],
        owner_id=row["user_id"],
        owner=row["username"],
    )
