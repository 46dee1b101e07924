"""User accounts: add, look up, list, set a password, disable or enable, the first admin."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import (
    Connection,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from nachtwacht.auth.audit import audit
from nachtwacht.auth.checks import DEFAULTS, AuthError, check_role, normalize_username
from nachtwacht.auth.models import (
    AuthSettings,
)
from nachtwacht.auth.passwords import check_password, hash_password, verify_password
from nachtwacht.clock import iso
from nachtwacht.store import paging
from nachtwacht.store import tables as t


def user_row(conn: Connection, username: str) -> dict[str, Any] | None:
    query = select(t.users).where(t.users.c.username == username)
    row = conn.execute(query).mappings().first()
    return None if row is None else dict(row)


def need_user(conn: Connection, username: str) -> dict[str, Any]:
    name = normalize_username(username)
    row = user_row(conn, name)
    if row is None:
        raise AuthError(f"no user is named '{name}'", kind="not_found", field="username")
    return row


def _user_view(
    row: dict[str, Any],
    now: float,
    active_sessions: int = 0,
    locks: list[tuple[str, float]] | None = None,
) -> dict[str, Any]:
    """`locked`: some address is locked out of this account; `locked_from` says which."""
    locks = locks or []
    return {
        "id": row["id"],
        "username": row["username"],
        "role": row["role"],
        "disabled": bool(row["disabled"]),
        "locked": bool(locks),
        "locked_until": iso(max(until for _, until in locks)) if locks else None,
        "locked_from": [ip or "unknown" for ip, _ in locks],
        "failed_logins": row["failed_logins"],
        "created_at": iso(row["created_at"]),
        "last_login_at": iso(row["last_login_at"]),
        "active_sessions": active_sessions,
    }


def add_user(
    conn: Connection,
    username: str,
    password: str,
    role: str,
    now: float,
    *,
    actor: str,
    ip: str | None = None,
    settings: AuthSettings = DEFAULTS,
) -> dict[str, Any]:
    name = normalize_username(username)
    role = check_role(role)
    check_password(password, settings)
    if user_row(conn, name) is not None:
        raise AuthError(f"a user named '{name}' already exists", kind="conflict", field="username")
    conn.execute(
        insert(t.users).values(
            username=name,
            password_hash=hash_password(password),
            role=role,
            disabled=False,
            created_at=now,
            failed_logins=0,
        )
    )
    audit(conn, actor, "user.add", name, {"role": role}, ip, now)
    return get_user(conn, name, now)


def get_user(conn: Connection, username: str, now: float) -> dict[str, Any]:
    row = need_user(conn, username)
    locks = _locks(conn, now, row["username"]).get(row["username"])
    return _user_view(row, now, _active_sessions(conn, now).get(row["id"], 0), locks)


def list_users(
    conn: Connection, now: float, limit: int | None = None, offset: int = 0
) -> list[dict[str, Any]]:
    counts, locks = _active_sessions(conn, now), _locks(conn, now)
    query = paging.window(select(t.users).order_by(t.users.c.username), limit, offset)
    rows = conn.execute(query).mappings()
    return [
        _user_view(dict(r), now, counts.get(r["id"], 0), locks.get(r["username"])) for r in rows
    ]


def count_users(conn: Connection) -> int:
    return paging.count(conn, select(t.users))


def _active_sessions(conn: Connection, now: float) -> dict[int, int]:
    s = t.sessions.c
    query = (
        select(s.user_id, func.count())
        .where(s.revoked_at.is_(None), s.expires_at > now)
        .group_by(s.user_id)
    )
    return {user_id: n for user_id, n in conn.execute(query)}


def _locks(
    conn: Connection, now: float, username: str | None = None
) -> dict[str, list[tuple[str, float]]]:
    """Running locks by username: [(address, locked until)], oldest address first."""
    f = t.login_failures.c
    query = select(f.username, f.ip, f.locked_until).where(f.locked_until > now)
    if username is not None:
        query = query.where(f.username == username)
    out: dict[str, list[tuple[str, float]]] = {}
    for name, ip, until in conn.execute(query.order_by(f.username, f.ip)):
        out.setdefault(name, []).append((ip, until))
    return out


def set_password(
    conn: Connection,
    username: str,
    password: str,
    now: float,
    *,
    actor: str,
    ip: str | None = None,
    settings: AuthSettings = DEFAULTS,
    keep_session: int | None = None,
) -> int:
    """Set a new password, lift every lock, and end the user's sessions (but `keep_session`).

    Ending the sessions is the point of a password change after a leak. Users changing their
    own password go through `change_own_password`, which checks the current one first.
    Returns how many sessions were ended.
    """
    row = need_user(conn, username)
    check_password(password, settings)
    conn.execute(
        update(t.users)
        .where(t.users.c.id == row["id"])
        .values(password_hash=hash_password(password), failed_logins=0)
    )
    unlock(conn, row["username"])
    ended = revoke_user_sessions(conn, row["id"], now, keep_session)
    audit(conn, actor, "user.passwd", row["username"], {"sessions_revoked": ended}, ip, now)
    return ended


def set_disabled(
    conn: Connection,
    username: str,
    disabled: bool,
    now: float,
    *,
    actor: str,
    ip: str | None = None,
) -> dict[str, Any]:
    """Disable (and log out everywhere) or enable a user; enabling also lifts a lock."""
    row = need_user(conn, username)
    values: dict[str, Any] = {"disabled": disabled}
    detail: dict[str, Any] = {}
    if disabled:
        if row["role"] == "admin" and not row["disabled"] and _enabled_admins(conn) <= 1:
            raise AuthError(
                f"'{row['username']}' is the last enabled admin; add another admin first",
                kind="conflict",
                field="username",
            )
        detail["sessions_revoked"] = revoke_user_sessions(conn, row["id"], now)
    else:
        values["failed_logins"] = 0
        unlocked = unlock(conn, row["username"])
        if unlocked:
            detail["unlocked"] = unlocked
    conn.execute(update(t.users).where(t.users.c.id == row["id"]).values(**values))
    action = "user.disable" if disabled else "user.enable"
    audit(conn, actor, action, row["username"], detail or None, ip, now)
    return get_user(conn, row["username"], now)


def _enabled_admins(conn: Connection) -> int:
    u = t.users.c
    query = select(func.count()).where(u.role == "admin", u.disabled.is_(False))
    return int(conn.execute(query).scalar_one())


def ensure_admin(conn: Connection, now: float) -> str | None:
    """On first start (no users at all) create `admin` with a random one-time password.

    Returns that password, to be shown once, or None when users exist. Two processes starting
    together on one database cannot both create it: the loser's insert hits the unique name.
    """
    if conn.execute(select(func.count()).select_from(t.users)).scalar_one():
        return None
    password = secrets.token_urlsafe(15)  # 20 characters, 120 bits
    try:
        with conn.begin_nested():
            conn.execute(
                insert(t.users).values(
                    username="admin",
                    password_hash=hash_password(password),
                    role="admin",
                    disabled=False,
                    created_at=now,
                    failed_logins=0,
                )
            )
    except IntegrityError:
        return None
    audit(conn, "system", "user.bootstrap", "admin", {"role": "admin"}, None, now)
    return password


def unlock(conn: Connection, name: str) -> int:
    """Forget every address's failures for this name (an admin's unlock, a new password)."""
    f = t.login_failures.c
    return int(conn.execute(delete(t.login_failures).where(f.username == name)).rowcount or 0)


def revoke_user_sessions(
    conn: Connection, user_id: int, now: float, keep: int | None = None
) -> int:
    s = t.sessions.c
    query = update(t.sessions).where(s.user_id == user_id, s.revoked_at.is_(None))
    if keep is not None:
        query = query.where(s.id != keep)
    return int(conn.execute(query.values(revoked_at=now)).rowcount or 0)


def enabled_admins(conn: Connection) -> int:
    """How many enabled admin accounts there are."""
    return _enabled_admins(conn)


def default_passwords(conn: Connection, guesses: tuple[str, ...]) -> tuple[int, list[str]]:
    """(accounts checked, the usernames whose password is one of `guesses` or the username).

    Only enabled accounts that can change things (responders and admins) are checked: each
    guess costs an argon2 verification, as slow as a login on purpose, so they run side by
    side and viewers (who can only read) are left out.
    """
    u = t.users.c
    users = conn.execute(
        select(u.username, u.password_hash).where(
            u.disabled.is_(False), u.role.in_(("admin", "responder"))
        )
    ).all()

    def weak(row: Any) -> bool:
        return any(verify_password(row[1], g) for g in (*guesses, row[0]))

    with ThreadPoolExecutor(max_workers=4) as pool:
        found = list(pool.map(weak, users))
    return len(users), [row[0] for row, bad in zip(users, found, strict=True) if bad]
