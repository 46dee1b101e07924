"""Users, logins, sessions, API tokens, ingest keys and the audit log: plain functions.

Every function takes a SQLAlchemy `Connection` (the caller owns the transaction) and `now`
from the caller's clock. Functions that change something write their own audit entry in the
same transaction, so the web and the CLI audit the same way.

Passwords are hashed with argon2id (`HASHER`). Session cookies, API tokens and ingest keys are
256-bit random strings stored as sha256 hex: they cannot be guessed, so a slow hash would only
cost time on every request, and a copy of the table holds nothing that can be replayed.

`login` and `change_own_password` never raise for a wrong password: they return an outcome,
because the failure count, the lock and the audit entry must be committed even though the
answer is "no".

The lockout is per username as typed and client address (`login_failures`): wrong passwords
from one address lock that address out of that name, whether the account exists or not, so
the answers cannot tell real names from unknown ones and a guesser elsewhere cannot lock the
owner out. The per-address throttle across all names (from the audit log) stays on top.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import (
    Connection,
    Select,
    Table,
    and_,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from nachtwacht.auth.models import (
    ROLES,
    SCOPES,
    AuthSettings,
    Principal,
    Role,
    lesser_role,
    role_allows,
)
from nachtwacht.clock import iso
from nachtwacht.store import paging
from nachtwacht.store import tables as t
from nachtwacht.store.db import inserted_id

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
    return role


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


def _user_row(conn: Connection, username: str) -> dict[str, Any] | None:
    query = select(t.users).where(t.users.c.username == username)
    row = conn.execute(query).mappings().first()
    return None if row is None else dict(row)


def _need_user(conn: Connection, username: str) -> dict[str, Any]:
    name = normalize_username(username)
    row = _user_row(conn, name)
    if row is None:
        raise AuthError(f"no user is named '{name}'", status_code=404, field="username")
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
    row = _need_user(conn, username)
    check_password(password, settings)
    conn.execute(
        update(t.users)
        .where(t.users.c.id == row["id"])
        .values(password_hash=hash_password(password), failed_logins=0)
    )
    _unlock(conn, row["username"])
    ended = _revoke_user_sessions(conn, row["id"], now, keep_session)
    audit(conn, actor, "user.passwd", row["username"], {"sessions_revoked": ended}, ip, now)
    return ended


@dataclass
class PasswordOutcome:
    ok: bool
    status_code: int = 200
    message: str = ""
    field: str | None = None
    retry_after: float | None = None
    sessions_revoked: int = 0


def change_own_password(
    conn: Connection,
    username: str,
    current_password: str,
    password: str,
    now: float,
    *,
    ip: str | None = None,
    settings: AuthSettings = DEFAULTS,
    keep_session: int | None = None,
) -> PasswordOutcome:
    """A user changing their own password: the current one must be right first.

    A borrowed session must not be a way to guess the password either: a wrong current
    password counts toward the same lockout as a wrong login (and the same address throttle),
    is audited as `user.passwd.failed`, and a locked address may not try at all. Like `login`
    this returns the refusal instead of raising, so the count is committed.
    """
    row = _need_user(conn, username)
    name, where = row["username"], _ip_key(ip)
    wait = _lock_wait(conn, name, where, now)
    throttled = _throttle_wait(conn, ip, now, settings) if wait is None else None
    if throttled is not None:
        wait = throttled[0]
    if wait is not None:
        audit(conn, name, "user.passwd.locked", name, {"retry_after": round(wait)}, ip, now)
        return PasswordOutcome(
            False, 429, f"too many wrong passwords; try again in {_minutes(wait)}", None, wait
        )
    if len(current_password) > MAX_PASSWORD or not verify_password(
        row["password_hash"], current_password
    ):
        failures, locked = _count_failure(conn, name, where, now, settings)
        conn.execute(
            update(t.users)
            .where(t.users.c.id == row["id"])
            .values(failed_logins=t.users.c.failed_logins + 1)
        )
        detail = {"reason": "wrong current password", "failures": failures}
        audit(conn, name, "user.passwd.failed", name, detail, ip, now)
        if locked:
            _audit_lock(conn, name, failures, now + settings.lockout_for, ip, now)
        return PasswordOutcome(False, 403, "the current password is wrong", "current_password")
    check_password(password, settings)
    ended = set_password(
        conn, name, password, now, actor=name, ip=ip, settings=settings, keep_session=keep_session
    )
    return PasswordOutcome(True, sessions_revoked=ended)


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
        values["failed_logins"] = 0
        unlocked = _unlock(conn, row["username"])
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
# audit actions that are a wrong password guessed from an address, for the address throttle
GUESSES = ("login.failed", "user.passwd.failed")


def _ip_key(ip: str | None) -> str:
    return _clip(ip, 64) or ""


def _failed_from(conn: Connection, ip: str, since: float) -> tuple[int, float | None]:
    a = t.audit_log.c
    query = select(func.count(), func.min(a.ts)).where(
        a.action.in_(GUESSES), a.ip == ip, a.ts > since
    )
    count, oldest = conn.execute(query).one()
    return int(count), oldest


def _throttle_wait(
    conn: Connection, ip: str | None, now: float, settings: AuthSettings
) -> tuple[float, int] | None:
    """(seconds to wait, failures) when this address guessed too often for any names lately."""
    if ip is None:
        return None
    failures, oldest = _failed_from(conn, ip, now - settings.ip_window)
    if failures < settings.ip_max_failures:
        return None
    return max(1.0, (oldest or now) + settings.ip_window - now), failures


def _lock_wait(conn: Connection, name: str, ip: str, now: float) -> float | None:
    """Seconds until this address may try this name again, or None when it is not locked."""
    f = t.login_failures.c
    until = conn.execute(
        select(f.locked_until).where(f.username == name, f.ip == ip)
    ).scalar_one_or_none()
    return until - now if until is not None and until > now else None


def _count_failure(
    conn: Connection, name: str, ip: str, now: float, settings: AuthSettings
) -> tuple[int, bool]:
    """One more wrong password for this name from this address: (failures, now locked).

    The count starts afresh `lockout_for` after its first failure, and after a lock ran out.
    One upsert, not read-then-insert: parallel guesses of a name nobody has tried yet would
    otherwise race to insert (and deadlock on MariaDB's gap locks), which real names, whose
    rows exist, would not: a difference a guesser could see.
    """
    f = t.login_failures.c
    fresh = or_(
        f.first_at <= now - settings.lockout_for,
        and_(f.locked_until.is_not(None), f.locked_until <= now),
    )
    # ordered: MariaDB evaluates these left to right, each seeing the columns set before it,
    # so `failures` must be computed while `first_at` still holds the old value
    changes = [
        ("failures", case((fresh, 1), else_=f.failures + 1)),
        ("first_at", case((fresh, now), else_=f.first_at)),
    ]
    first = {"username": name, "ip": ip, "failures": 1, "first_at": now, "locked_until": None}
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        ins = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(t.login_failures)
        conn.execute(
            ins.values(**first).on_conflict_do_update(
                index_elements=[f.username, f.ip], set_=dict(changes)
            )
        )
    elif dialect in ("mysql", "mariadb"):
        conn.execute(
            mysql.insert(t.login_failures).values(**first).on_duplicate_key_update(changes)
        )
    else:  # no upsert known: read, then write (racy only under parallel guesses)
        if conn.execute(select(f.failures).where(f.username == name, f.ip == ip)).first():
            conn.execute(
                update(t.login_failures)
                .where(f.username == name, f.ip == ip)
                .values(**dict(changes))
            )
        else:
            conn.execute(insert(t.login_failures).values(**first))
    key = (f.username == name, f.ip == ip)
    failures = int(conn.execute(select(f.failures).where(*key)).scalar_one())
    locked = failures >= settings.lockout_after
    until = now + settings.lockout_for if locked else None
    conn.execute(update(t.login_failures).where(*key).values(locked_until=until))
    return failures, locked


def _unlock(conn: Connection, name: str) -> int:
    """Forget every address's failures for this name (an admin's unlock, a new password)."""
    f = t.login_failures.c
    return int(conn.execute(delete(t.login_failures).where(f.username == name)).rowcount or 0)


def _audit_lock(
    conn: Connection, name: str, failures: int, until: float, ip: str | None, now: float
) -> None:
    # the entry's address is the one locked out; the others may still log in
    detail = {"failures": failures, "until": iso(until)}
    audit(conn, "system", "user.locked", name, detail, ip, now)


def prune_login_failures(store: Any, now: float, settings: AuthSettings = DEFAULTS) -> int:
    """Delete counts that no longer matter (window over, no running lock); the engine's
    retention job calls this, so the login path never takes range locks for it."""
    f = t.login_failures.c
    with store.begin() as conn:
        result = conn.execute(
            delete(t.login_failures).where(
                f.first_at <= now - settings.lockout_for,
                or_(f.locked_until.is_(None), f.locked_until <= now),
            )
        )
    return int(result.rowcount or 0)


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

    Refusals, in order: too many failures from this address lately, whatever the names (429,
    nothing checked); this address locked out of this name (429, nothing checked); wrong
    username or password (401). Unknown names, wrong passwords and disabled accounts are one
    answer, each after one argon2 verification, and count toward the lock alike; the lock is
    keyed by the name as typed, so it answers the same for names that do not exist.
    `replaces` is the browser's previous session cookie, ended on success so a login never
    keeps an old session.
    """
    given = _clip(username.strip().lower()[:64], 64) or ""
    where = _ip_key(ip)
    throttled = _throttle_wait(conn, ip, now, settings)
    if throttled is not None:
        retry, failures = throttled
        audit(conn, given or "?", "login.throttled", given, {"failures": failures}, ip, now)
        message = f"too many failed logins from {ip}; try again in {retry:.0f} s"
        return LoginOutcome(False, 429, message, "throttled", retry)
    wait = _lock_wait(conn, given, where, now)
    if wait is not None:
        audit(conn, given or "?", "login.locked", given, {"retry_after": round(wait)}, ip, now)
        return LoginOutcome(
            False,
            429,
            f"this account is locked for your address after too many wrong passwords; "
            f"try again in {_minutes(wait)} or ask an admin to unlock it",
            "locked",
            wait,
        )
    # no row lock on the user: unknown names have no row to lock, and any difference in how
    # parallel attempts behave would tell the two apart; the counts are atomic upserts anyway
    row = _user_row(conn, given) if _USERNAME.fullmatch(given) else None
    if row is None:
        _burn_time(password[:MAX_PASSWORD])
        return _refused(conn, given, None, "unknown user", now, ip, settings)
    if len(password) > MAX_PASSWORD or not verify_password(row["password_hash"], password):
        return _refused(conn, given, row, "wrong password", now, ip, settings)
    if row["disabled"]:
        return _refused(conn, given, row, "disabled", now, ip, settings)
    values: dict[str, Any] = {"failed_logins": 0, "last_login_at": now}
    if HASHER.check_needs_rehash(row["password_hash"]):
        values["password_hash"] = hash_password(password)  # parameters were raised since
    conn.execute(update(t.users).where(t.users.c.id == row["id"]).values(**values))
    # this address got in: its count for this name starts again (other addresses keep theirs)
    f = t.login_failures.c
    conn.execute(delete(t.login_failures).where(f.username == given, f.ip == where))
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


def _refused(
    conn: Connection,
    given: str,
    row: dict[str, Any] | None,
    reason: str,
    now: float,
    ip: str | None,
    settings: AuthSettings,
) -> LoginOutcome:
    """Count and audit a refused password; the answer depends only on the count, never on
    `reason`, so it cannot tell an unknown name, a wrong password and a disabled account apart."""
    failures, locked = _count_failure(conn, given, _ip_key(ip), now, settings)
    if row is not None and reason != "disabled":
        # the admin's view of "someone is guessing": wrong passwords in a row, any address
        conn.execute(
            update(t.users)
            .where(t.users.c.id == row["id"])
            .values(failed_logins=t.users.c.failed_logins + 1)
        )
    detail = {"reason": reason, "failures": failures}
    audit(conn, given or "?", "login.failed", given, detail, ip, now)
    if not locked:
        return LoginOutcome(False, 401, WRONG, "wrong")
    _audit_lock(conn, given, failures, now + settings.lockout_for, ip, now)
    return LoginOutcome(
        False,
        401,
        f"{WRONG}; after {failures} wrong passwords this account is locked for "
        f"{_minutes(settings.lockout_for)} for your address",
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


def _active(table: Table, include_revoked: bool) -> Select:
    query = select(table).order_by(table.c.id)
    return query if include_revoked else query.where(table.c.revoked_at.is_(None))


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
    name, role = _name(name), check_role(role)
    owner_id: int | None = None
    noted: dict[str, Any] = {}
    if owner is not None:
        user = (
            _need_user(conn, owner)
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
    token_id, token = _create_secret(
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
        _secret_view(dict(r), "role")
        for r in conn.execute(_tokens_query(True).where(t.api_tokens.c.id == token_id)).mappings()
    ]
    return {**view, "token": token}


def _tokens_query(include_revoked: bool) -> Select:
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
    query = paging.window(_tokens_query(include_revoked), limit, offset)
    return [_secret_view(dict(r), "role") for r in conn.execute(query).mappings()]


def count_tokens(conn: Connection, *, include_revoked: bool = False) -> int:
    return paging.count(conn, _tokens_query(include_revoked))


def revoke_token(
    conn: Connection, token_id: int, now: float, *, actor: str, ip: str | None = None
) -> dict[str, Any]:
    return _revoke(conn, t.api_tokens, "token", token_id, now, actor, ip)


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
    _touch(conn, t.api_tokens, row["id"], now)
    return Principal(
        kind="token",
        name=f"token:{row['name']}",
        role=role,
        id=row["id"],
        owner_id=row["user_id"],
        owner=row["username"],
    )


def create_ingest_key(
    conn: Connection, name: str, scope: str, now: float, *, actor: str, ip: str | None = None
) -> dict[str, Any]:
    """A new ingest key; the result's `key` is the only time the plaintext exists."""
    name = _name(name)
    if scope not in SCOPES:
        raise AuthError(f"unknown scope '{scope}'; use {', '.join(SCOPES)}", field="scope")
    key_id, key = _create_secret(
        conn, t.ingest_keys, "ingest_key", name, "key_hash", ("scope", scope), INGEST_PREFIX,
        now, actor, ip,
    )  # fmt: skip
    row = conn.execute(select(t.ingest_keys).where(t.ingest_keys.c.id == key_id)).mappings().one()
    return {**_secret_view(dict(row), "scope"), "key": key}


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
    if kind == "token":
        query = _tokens_query(True).where(c.id == row_id)
    else:
        query = select(table).where(c.id == row_id)
    row = conn.execute(query).mappings().one()
    return _secret_view(dict(row), "role" if kind == "token" else "scope")
