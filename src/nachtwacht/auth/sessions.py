"""Browser sessions: open one at login, resolve a cookie, list, revoke, log out."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import (
    Connection,
    insert,
    select,
    update,
)

from nachtwacht.auth.audit import audit
from nachtwacht.auth.checks import DEFAULTS, AuthError, clip
from nachtwacht.auth.models import (
    AuthSettings,
    Principal,
)
from nachtwacht.auth.passwords import new_secret, secret_hash
from nachtwacht.auth.users import need_user, revoke_user_sessions
from nachtwacht.clock import iso
from nachtwacht.store import tables as t
from nachtwacht.store.db import inserted_id

# last_seen / last_used_at are written at most this often: not one write per request
TOUCH_EVERY = 60.0


def session_expiry(created_at: float, now: float, settings: AuthSettings) -> float:
    return min(created_at + settings.session_max, now + settings.session_idle)


def create_session(
    conn: Connection,
    user_id: int,
    now: float,
    *,
    ip: str | None = None,
    user_agent: str | None = None,
    settings: AuthSettings = DEFAULTS,
) -> tuple[int, str, str]:
    """Open a session; returns (id, cookie value, csrf token). Only the cookie's hash is kept."""
    token = new_secret()
    csrf = secrets.token_urlsafe(32)
    result = conn.execute(
        insert(t.sessions).values(
            token_hash=secret_hash(token),
            user_id=user_id,
            csrf_token=csrf,
            created_at=now,
            last_seen=now,
            expires_at=session_expiry(now, now, settings),
            ip=clip(ip, 64),
            user_agent=clip(user_agent, 300),
        )
    )
    return inserted_id(result), token, csrf


def resolve_session(
    conn: Connection, token: str, now: float, settings: AuthSettings = DEFAULTS
) -> Principal | None:
    """The user behind a session cookie, or None (unknown, ended, expired or user disabled)."""
    if not token or len(token) > 200:
        return None
    s, u = t.sessions.c, t.users.c
    row = (
        conn.execute(
            select(s.id, s.user_id, s.csrf_token, s.created_at, s.last_seen, u.username, u.role)
            .join(t.users, u.id == s.user_id)
            .where(
                s.token_hash == secret_hash(token),
                s.revoked_at.is_(None),
                s.expires_at > now,
                u.disabled.is_(False),
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    if now - row["last_seen"] >= TOUCH_EVERY:
        conn.execute(
            update(t.sessions)
            .where(s.id == row["id"])
            .values(last_seen=now, expires_at=session_expiry(row["created_at"], now, settings))
        )
    return Principal(
        kind="user",
        name=row["username"],
        role=row["role"],
        id=row["user_id"],
        session_id=row["id"],
        csrf_token=row["csrf_token"],
    )


def list_sessions(
    conn: Connection, now: float, username: str | None = None, *, include_ended: bool = False
) -> list[dict[str, Any]]:
    s, u = t.sessions.c, t.users.c
    query = (
        select(t.sessions, u.username)
        .join(t.users, u.id == s.user_id)
        .order_by(s.last_seen.desc(), s.id.desc())
    )
    if username is not None:
        query = query.where(s.user_id == need_user(conn, username)["id"])
    if not include_ended:
        query = query.where(s.revoked_at.is_(None), s.expires_at > now)
    return [
        {
            "id": r["id"],
            "user": r["username"],
            "created_at": iso(r["created_at"]),
            "last_seen": iso(r["last_seen"]),
            "expires_at": iso(r["expires_at"]),
            "ip": r["ip"],
            "user_agent": r["user_agent"],
            "revoked_at": iso(r["revoked_at"]),
            "active": r["revoked_at"] is None and r["expires_at"] > now,
        }
        for r in conn.execute(query).mappings()
    ]


def revoke_session(
    conn: Connection,
    session_id: int,
    now: float,
    *,
    actor: str,
    ip: str | None = None,
    owner: str | None = None,
) -> dict[str, Any]:
    """End one session; with `owner`, only if it is that user's (others look like 404)."""
    s, u = t.sessions.c, t.users.c
    query = select(s.id, s.revoked_at, u.username).join(t.users, u.id == s.user_id)
    row = conn.execute(query.where(s.id == session_id)).mappings().first()
    if row is None or (owner is not None and row["username"] != owner):
        raise AuthError(f"no session #{session_id}", kind="not_found", field="id")
    if row["revoked_at"] is None:
        conn.execute(update(t.sessions).where(s.id == session_id).values(revoked_at=now))
        audit(conn, actor, "session.revoke", row["username"], {"session_id": session_id}, ip, now)
    return {"id": session_id, "user": row["username"], "revoked": True}


def revoke_all_sessions(
    conn: Connection,
    username: str,
    now: float,
    *,
    actor: str,
    ip: str | None = None,
    keep_session: int | None = None,
) -> int:
    """End every session of a user (the protocol's step after a suspected breach)."""
    row = need_user(conn, username)
    ended = revoke_user_sessions(conn, row["id"], now, keep_session)
    detail = {"sessions_revoked": ended, "kept": keep_session}
    audit(conn, actor, "session.revoke_all", row["username"], detail, ip, now)
    return ended


def end_session(
    conn: Connection,
    token: str,
    now: float,
    *,
    ip: str | None = None,
    reason: str = "logout",
) -> bool:
    """Log out: end the session behind a cookie value. False when it was not active."""
    s, u = t.sessions.c, t.users.c
    row = (
        conn.execute(
            select(s.id, u.username)
            .join(t.users, u.id == s.user_id)
            .where(s.token_hash == secret_hash(token), s.revoked_at.is_(None))
        )
        .mappings()
        .first()
    )
    if row is None:
        return False
    conn.execute(update(t.sessions).where(s.id == row["id"]).values(revoked_at=now))
    detail = {"session_id": row["id"], "reason": reason}
    audit(conn, row["username"], "logout", row["username"], detail, ip, now)
    return True
