"""Users, logins, sessions, API tokens, ingest keys and the audit log: plain functions.

Every function takes a SQLAlchemy `Connection` (the caller owns the transaction) and `now`
from the caller's clock. Functions that change something write their own audit entry in the
same transaction, so the web and the CLI audit the same way.

Passwords are hashed with argon2id (`HASHER`). Session cookies, API tokens and ingest keys are
256-bit random strings stored as sha256 hex: they cannot be guessed, so a slow hash would only
cost time on every request, and a copy of the table holds nothing that can be replayed.

`login` never raises for a refused login: it returns a `LoginOutcome`, because the failure
count, the lock and the audit entry must be committed even though the answer is "no".
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, Select, Table, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from nachtwacht.auth.models import ROLES, SCOPES, AuthSettings, Principal, Role
from nachtwacht.clock import iso
from nachtwacht.store import paging
from nachtwacht.store import tables as t

HASHER = PasswordHasher()  # RFC 9106 low-memory profile: argon2id, 64 MiB, t=3, p=4
DEFAULTS = AuthSettings()
# last_seen / last_used_at are written at most this often: not one write per request
TOUCH_EVERY = 60.0
MAX_PASSWORD = 1024  # argon2 accepts more, but hashing megabytes is a cheap denial of service
TOKEN_PREFIX = "nwt_"
INGEST_PREFIX = "nwk_"
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
_dummy: dict[int, str] = {}


class AuthError(ValueError):
    """A request that cannot be done; `status_code` and `field` shape the API's answer."""

    def __init__(
        self,
        message: str,
        status_code: int = 422,
        field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.field = field
        self.retry_after = retry_after


# -- secrets ---------------------------------------------------------------------------------


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _burn_time(password: str) -> None:
    """Verify against a throwaway hash, so an unknown username costs as long as a known one."""
    key = id(HASHER)
    if key not in _dummy:
        _dummy[key] = HASHER.hash(secrets.token_urlsafe(16))
    verify_password(_dummy[key], password)


def new_secret(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


# -- validation ------------------------------------------------------------------------------


def normalize_username(name: str) -> str:
    """Usernames are compared lower-case: `Alice` and `alice` are one account."""
    value = name.strip().lower()
    if not _USERNAME.fullmatch(value):
        raise AuthError(
            f"'{name}' is not a valid username: 1-64 characters of a-z 0-9 . _ @ -, "
            "starting with a letter or digit",
            field="username",
        )
    return value


def check_password(password: str, settings: AuthSettings = DEFAULTS) -> None:
    if len(password) < settings.min_password_length:
        raise AuthError(
            f"the password must be at least {settings.min_password_length} characters",
            field="password",
        )
    if len(password) > MAX_PASSWORD:
        raise AuthError(f"the password must be at most {MAX_PASSWORD} characters", field="password")


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise AuthError(f"unknown role '{role}'; use {', '.join(ROLES)}", field="role")
    return role  # type: ignore[return-value]


def _name(value: str, field: str = "name") -> str:
    text = value.strip()
    if not 1 <= len(text) <= 120:
        raise AuthError(f"the {field} must be 1-120 characters", field=field)
    return text


def _clip(value: str | None, size: int) -> str | None:
    # PostgreSQL text cannot hold NUL; a username typed by an attacker may
    return None if value is None else value.replace("\x00", "\ufffd")[:size]


# -- audit -----------------------------------------------------------------------------------


def audit(
    conn: Connection,
    actor: str,
    action: str,
    target: str | None,
    detail: dict[str, Any] | None,
    ip: str | None,
    now: float,
) -> None:
    conn.execute(
        insert(t.audit_log).values(
            ts=now,
            actor=_clip(actor, 120) or "?",
            action=action[:64],
            target=_clip(target, 300),
            detail_json=json.dumps(detail, sort_keys=True, default=str) if detail else None,
            ip=_clip(ip, 64),
        )
    )


def _audit_query(since: float | None, action: str | None, actor: str | None) -> Select:
    a = t.audit_log.c
    query = select(t.audit_log).order_by(a.ts.desc(), a.id.desc())
    if since is not None:
        query = query.where(a.ts >= since)
    if action:
        family = action.endswith(".")
        query = query.where(
            a.action.startswith(action, autoescape=True) if family else a.action == action
        )
    if actor:
        query = query.where(a.actor == actor)
    return query


def count_audit(
    conn: Connection,
    since: float | None = None,
    *,
    action: str | None = None,
    actor: str | None = None,
) -> int:
    return paging.count(conn, _audit_query(since, action, actor))


def audit_log(
    conn: Connection,
    since: float | None = None,
    limit: int = 1000,
    *,
    action: str | None = None,
    actor: str | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Entries at or after `since`, newest first; `action` may end in `.` to match a family."""
    query = paging.window(_audit_query(since, action, actor), max(1, limit), offset)
    return [
        {
            "id": r["id"],
            "ts": iso(r["ts"]),
            "actor": r["actor"],
            "action": r["action"],
            "target": r["target"],
            "detail": json.loads(r["detail_json"]) if r["detail_json"] else {},
            "ip": r["ip"],
        }
        for r in conn.execute(query).mappings()
    ]


def parse_since(value: str | None) -> float | None:
    """Epoch seconds or ISO 8601 (UTC unless it says otherwise); None or '' is None."""
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise AuthError(f"'{value}' is not a time", field="since")
        return number
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise AuthError(f"'{value}' is neither epoch seconds nor ISO 8601", field="since") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


AUDIT_FIELDS = ("id", "ts", "actor", "action", "target", "ip", "detail")


def export_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(AUDIT_FIELDS)
    for row in rows:
        values = [row[f] for f in AUDIT_FIELDS[:-1]]
        detail = json.dumps(row["detail"], sort_keys=True) if row["detail"] else ""
        # a cell starting with = + - @ is a formula to a spreadsheet: neutralise it
        writer.writerow([_csv_safe(v) for v in [*values, detail]])
    return out.getvalue()


def _csv_safe(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def export_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)


# -- users -----------------------------------------------------------------------------------


def _user_row(conn: Connection, username: str, *, lock: bool = False) -> dict[str, Any] | None:
    query = select(t.users).where(t.users.c.username == username)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    return None if row is None else dict(row)


def _need_user(conn: Connection, username: str) -> dict[str, Any]:
    name = normalize_username(username)
    row = _user_row(conn, name)
    if row is None:
        raise AuthError(f"no user is named '{name}'", status_code=404, field="username")
    return row


def _user_view(row: dict[str, Any], now: float, active_sessions: int = 0) -> dict[str, Any]:
    locked = row["locked_until"] is not None and row["locked_until"] > now
    return {
        "id": row["id"],
        "username": row["username"],
        "role": row["role"],
        "disabled": bool(row["disabled"]),
        "locked": locked,
        "locked_until": iso(row["locked_until"]) if locked else None,
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
    if _user_row(conn, name) is not None:
        raise AuthError(f"a user named '{name}' already exists", status_code=409, field="username")
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
    row = _need_user(conn, username)
    return _user_view(row, now, _active_sessions(conn, now).get(row["id"], 0))


def list_users(
    conn: Connection, now: float, limit: int | None = None, offset: int = 0
) -> list[dict[str, Any]]:
    counts = _active_sessions(conn, now)
    query = paging.window(select(t.users).order_by(t.users.c.username), limit, offset)
    rows = conn.execute(query).mappings()
    return [_user_view(dict(r), now, counts.get(r["id"], 0)) for r in rows]


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
    current_password: str | None = None,
) -> int:
    """Set a new password, lift a lock, and end the user's sessions (but `keep_session`).

    Ending the sessions is the point of a password change after a leak. With
    `current_password` (users changing their own) that must be right first, so a borrowed
    session cannot take the account over. Returns how many sessions were ended.
    """
    row = _need_user(conn, username)
    if current_password is not None and not verify_password(
        row["password_hash"], current_password[:MAX_PASSWORD]
    ):
        raise AuthError("the current password is wrong", status_code=403, field="current_password")
    check_password(password, settings)
    conn.execute(
        update(t.users)
        .where(t.users.c.id == row["id"])
        .values(password_hash=hash_password(password), failed_logins=0, locked_until=None)
    )
    ended = _revoke_user_sessions(conn, row["id"], now, keep_session)
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
    row = _need_user(conn, username)
    values: dict[str, Any] = {"disabled": disabled}
    detail: dict[str, Any] = {}
    if disabled:
        if row["role"] == "admin" and not row["disabled"] and _enabled_admins(conn) <= 1:
            raise AuthError(
                f"'{row['username']}' is the last enabled admin; add another admin first",
                status_code=409,
                field="username",
            )
        detail["sessions_revoked"] = _revoke_user_sessions(conn, row["id"], now)
    else:
        values.update(failed_logins=0, locked_until=None)
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


# -- login -----------------------------------------------------------------------------------


@dataclass
class LoginOutcome:
    ok: bool
    status_code: int = 200
    message: str = ""
    reason: str = "ok"  # ok | wrong | locked | throttled
    retry_after: float | None = None
    username: str | None = None
    role: Role | None = None
    session_id: int | None = None
    token: str | None = None  # the session cookie's value; only its hash is stored
    csrf_token: str | None = None
    expires_at: float | None = None


WRONG = "wrong username or password"


def _failed_from(conn: Connection, ip: str, since: float) -> tuple[int, float | None]:
    a = t.audit_log.c
    query = select(func.count(), func.min(a.ts)).where(
        a.action == "login.failed", a.ip == ip, a.ts > since
    )
    count, oldest = conn.execute(query).one()
    return int(count), oldest


def login(
    conn: Connection,
    username: str,
    password: str,
    now: float,
    *,
    ip: str | None,
    user_agent: str | None = None,
    settings: AuthSettings = DEFAULTS,
    replaces: str | None = None,
) -> LoginOutcome:
    """Check a password and open a session; audit every attempt with its address.

    Refusals, in order: too many failures from this address lately (429, nothing checked),
    account locked (429), wrong username or password (401; the 5th in a row locks the account),
    account disabled (401, same words, so a guesser learns nothing). `replaces` is the
    browser's previous session cookie, ended on success so a login never keeps an old session.
    """
    given = username.strip().lower()[:64]
    if ip is not None:
        failures, oldest = _failed_from(conn, ip, now - settings.ip_window)
        if failures >= settings.ip_max_failures:
            wait = max(1.0, (oldest or now) + settings.ip_window - now)
            audit(conn, given or "?", "login.throttled", given, {"failures": failures}, ip, now)
            message = f"too many failed logins from {ip}; try again in {wait:.0f} s"
            return LoginOutcome(False, 429, message, "throttled", wait)
    row = _user_row(conn, given, lock=True) if _USERNAME.fullmatch(given) else None
    if row is None:
        _burn_time(password[:MAX_PASSWORD])
        audit(conn, given or "?", "login.failed", given, {"reason": "unknown user"}, ip, now)
        return LoginOutcome(False, 401, WRONG, "wrong")
    locked_until = row["locked_until"]
    if locked_until is not None and locked_until > now:
        wait = locked_until - now
        audit(conn, given, "login.locked", given, {"locked_until": iso(locked_until)}, ip, now)
        return LoginOutcome(
            False,
            429,
            f"this account is locked after repeated wrong passwords; "
            f"try again in {_minutes(wait)} or ask an admin to unlock it",
            "locked",
            wait,
        )
    if len(password) > MAX_PASSWORD or not verify_password(row["password_hash"], password):
        return _wrong_password(conn, row, now, ip, settings)
    if row["disabled"]:
        audit(conn, given, "login.failed", given, {"reason": "disabled"}, ip, now)
        return LoginOutcome(False, 401, WRONG, "wrong")
    values: dict[str, Any] = {"failed_logins": 0, "locked_until": None, "last_login_at": now}
    if HASHER.check_needs_rehash(row["password_hash"]):
        values["password_hash"] = hash_password(password)  # parameters were raised since
    conn.execute(update(t.users).where(t.users.c.id == row["id"]).values(**values))
    if replaces:
        end_session(conn, replaces, now, ip=ip, reason="replaced by a new login")
    session_id, token, csrf = create_session(
        conn, row["id"], now, ip=ip, user_agent=user_agent, settings=settings
    )
    audit(conn, given, "login.success", given, {"session_id": session_id}, ip, now)
    return LoginOutcome(
        True,
        200,
        "ok",
        "ok",
        username=row["username"],
        role=row["role"],
        session_id=session_id,
        token=token,
        csrf_token=csrf,
        expires_at=_session_expiry(now, now, settings),
    )


def _wrong_password(
    conn: Connection, row: dict[str, Any], now: float, ip: str | None, settings: AuthSettings
) -> LoginOutcome:
    u = t.users.c
    # a lock that has run out starts a fresh count: five more tries, not one
    expired = row["locked_until"] is not None and row["locked_until"] <= now
    failures = 1 if expired else row["failed_logins"] + 1
    values: dict[str, Any] = {"failed_logins": failures, "locked_until": None}
    locked = failures >= settings.lockout_after
    if locked:
        values["locked_until"] = now + settings.lockout_for
    conn.execute(update(t.users).where(u.id == row["id"]).values(**values))
    name = row["username"]
    detail = {"reason": "wrong password", "failures": failures}
    audit(conn, name, "login.failed", name, detail, ip, now)
    if not locked:
        return LoginOutcome(False, 401, WRONG, "wrong")
    until = iso(values["locked_until"])
    audit(conn, "system", "user.locked", name, {"failures": failures, "until": until}, ip, now)
    return LoginOutcome(
        False,
        401,
        f"{WRONG}; after {failures} wrong passwords in a row the account is locked for "
        f"{_minutes(settings.lockout_for)}",
        "locked",
        settings.lockout_for,
    )


def _minutes(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute" + ("" if minutes == 1 else "s")


# -- sessions --------------------------------------------------------------------------------


def _session_expiry(created_at: float, now: float, settings: AuthSettings) -> float:
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
            expires_at=_session_expiry(now, now, settings),
            ip=_clip(ip, 64),
            user_agent=_clip(user_agent, 300),
        )
    )
    return int(result.inserted_primary_key[0]), token, csrf


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
            .values(last_seen=now, expires_at=_session_expiry(row["created_at"], now, settings))
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
        query = query.where(s.user_id == _need_user(conn, username)["id"])
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
        raise AuthError(f"no session #{session_id}", status_code=404, field="id")
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
    row = _need_user(conn, username)
    ended = _revoke_user_sessions(conn, row["id"], now, keep_session)
    detail = {"sessions_revoked": ended, "kept": keep_session}
    audit(conn, actor, "session.revoke_all", row["username"], detail, ip, now)
    return ended


def _revoke_user_sessions(
    conn: Connection, user_id: int, now: float, keep: int | None = None
) -> int:
    s = t.sessions.c
    query = update(t.sessions).where(s.user_id == user_id, s.revoked_at.is_(None))
    if keep is not None:
        query = query.where(s.id != keep)
    return int(conn.execute(query.values(revoked_at=now)).rowcount or 0)


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


# -- API tokens and ingest keys --------------------------------------------------------------


def _touch(conn: Connection, table: Any, row_id: int, now: float) -> None:
    c = table.c
    conn.execute(
        update(table)
        .where(
            c.id == row_id,
            or_(c.last_used_at.is_(None), c.last_used_at <= now - TOUCH_EVERY),
        )
        .values(last_used_at=now)
    )


def _secret_view(row: dict[str, Any], extra: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        extra: row[extra],
        "created_by": row["created_by"],
        "created_at": iso(row["created_at"]),
        "last_used_at": iso(row["last_used_at"]),
        "revoked_at": iso(row["revoked_at"]),
    }


def _create_secret(
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
) -> tuple[dict[str, Any], str]:
    """Insert a token-like row holding only the secret's hash; return the row and the secret.

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
        )
    )
    row_id = int(result.inserted_primary_key[0])
    audit(conn, actor, f"{kind}.create", f"{kind}:{row_id}", {"name": name, field: value}, ip, now)
    row = conn.execute(select(table).where(table.c.id == row_id)).mappings().one()
    return _secret_view(dict(row), field), secret


def _active(table: Table, include_revoked: bool) -> Select:
    query = select(table).order_by(table.c.id)
    return query if include_revoked else query.where(table.c.revoked_at.is_(None))


def create_token(
    conn: Connection, name: str, role: str, now: float, *, actor: str, ip: str | None = None
) -> dict[str, Any]:
    """A new API token; the result's `token` is the only time the plaintext exists."""
    name, role = _name(name), check_role(role)
    view, token = _create_secret(
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
    )
    return {**view, "token": token}


def _tokens_query(include_revoked: bool) -> Select:
    return _active(t.api_tokens, include_revoked)


def list_tokens(
    conn: Connection, *, include_revoked: bool = False, limit: int | None = None, offset: int = 0
) -> list[dict[str, Any]]:
    query = paging.window(_tokens_query(include_revoked), limit, offset)
    return [_secret_view(dict(r), "role") for r in conn.execute(query).mappings()]


def count_tokens(conn: Connection, *, include_revoked: bool = False) -> int:
    return paging.count(conn, _tokens_query(include_revoked))


def revoke_token(
    conn: Connection, token_id: int, now: float, *, actor: str, ip: str | None = None
) -> dict[str, Any]:
    return _revoke(conn, t.api_tokens, "token", token_id, now, actor, ip)


def resolve_token(conn: Connection, token: str, now: float) -> Principal | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    c = t.api_tokens.c
    query = select(t.api_tokens).where(c.token_hash == secret_hash(token), c.revoked_at.is_(None))
    row = conn.execute(query).mappings().first()
    if row is None:
        return None
    _touch(conn, t.api_tokens, row["id"], now)
    return Principal(kind="token", name=f"token:{row['name']}", role=row["role"], id=row["id"])


def create_ingest_key(
    conn: Connection, name: str, scope: str, now: float, *, actor: str, ip: str | None = None
) -> dict[str, Any]:
    """A new ingest key; the result's `key` is the only time the plaintext exists."""
    name = _name(name)
    if scope not in SCOPES:
        raise AuthError(f"unknown scope '{scope}'; use {', '.join(SCOPES)}", field="scope")
    view, key = _create_secret(
        conn, t.ingest_keys, "ingest_key", name, "key_hash", ("scope", scope), INGEST_PREFIX,
        now, actor, ip,
    )  # fmt: skip
    return {**view, "key": key}


def list_ingest_keys(conn: Connection, *, include_revoked: bool = False) -> list[dict[str, Any]]:
    query = _active(t.ingest_keys, include_revoked)
    return [_secret_view(dict(r), "scope") for r in conn.execute(query).mappings()]


def revoke_ingest_key(
    conn: Connection, key_id: int, now: float, *, actor: str, ip: str | None = None
) -> dict[str, Any]:
    return _revoke(conn, t.ingest_keys, "ingest_key", key_id, now, actor, ip)


NO_INGEST_KEY = "an ingest key is required (Authorization: Bearer <key> or ?key=)"


def resolve_ingest_key(conn: Connection, key: str | None, scope: str, now: float) -> dict[str, Any]:
    """The key's {id, name, scope} when it may send `scope`; AuthError 401/403 otherwise."""
    if not key:
        raise AuthError(NO_INGEST_KEY, 401)
    c = t.ingest_keys.c
    row = None
    if key.startswith(INGEST_PREFIX) and len(key) <= 200:
        query = select(c.id, c.name, c.scope).where(
            c.key_hash == secret_hash(key), c.revoked_at.is_(None)
        )
        row = conn.execute(query).mappings().first()
    if row is None:
        raise AuthError("unknown or revoked ingest key", 401, field="key")
    if row["scope"] not in (scope, "all"):
        raise AuthError(
            f"ingest key '{row['name']}' may send {row['scope']}, not {scope}", 403, field="key"
        )
    _touch(conn, t.ingest_keys, row["id"], now)
    return dict(row)


def _revoke(
    conn: Connection,
    table: Any,
    kind: str,
    row_id: int,
    now: float,
    actor: str,
    ip: str | None,
) -> dict[str, Any]:
    c = table.c
    row = conn.execute(select(table).where(c.id == row_id)).mappings().first()
    label = kind.replace("_", " ")
    if row is None:
        raise AuthError(f"no {label} #{row_id}", status_code=404, field="id")
    if row["revoked_at"] is None:
        conn.execute(
            update(table).where(and_(c.id == row_id, c.revoked_at.is_(None))).values(revoked_at=now)
        )
        audit(conn, actor, f"{kind}.revoke", f"{kind}:{row_id}", {"name": row["name"]}, ip, now)
    row = conn.execute(select(table).where(c.id == row_id)).mappings().one()
    return _secret_view(dict(row), "role" if kind == "token" else "scope")
