"""Logins and a user's own password change, with the lockout and the address throttle.

`login` and `change_own_password` never raise for a wrong password: they return an outcome,
because the failure count, the lock and the audit entry must be committed even though the
answer is "no".

The lockout is per username as typed and client address (`login_failures`): wrong passwords
from one address lock that address out of that name, whether the account exists or not, so
the answers cannot tell real names from unknown ones and a guesser elsewhere cannot lock the
owner out. The per-address throttle across all names (from the audit log) stays on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
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

from nachtwacht.auth import passwords
from nachtwacht.auth.audit import audit
from nachtwacht.auth.checks import DEFAULTS, USERNAME, clip
from nachtwacht.auth.models import (
    AuthSettings,
    Role,
)
from nachtwacht.auth.passwords import (
    MAX_PASSWORD,
    burn_time,
    check_password,
    hash_password,
    verify_password,
)
from nachtwacht.auth.sessions import create_session, end_session, session_expiry
from nachtwacht.auth.users import need_user, set_password, user_row
from nachtwacht.clock import iso
from nachtwacht.store import tables as t


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
    row = need_user(conn, username)
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
    return clip(ip, 64) or ""


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
    given = clip(username.strip().lower()[:64], 64) or ""
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
    row = user_row(conn, given) if USERNAME.fullmatch(given) else None
    if row is None:
        burn_time(password[:MAX_PASSWORD])
        return _refused(conn, given, None, "unknown user", now, ip, settings)
    if len(password) > MAX_PASSWORD or not verify_password(row["password_hash"], password):
        return _refused(conn, given, row, "wrong password", now, ip, settings)
    if row["disabled"]:
        return _refused(conn, given, row, "disabled", now, ip, settings)
    values: dict[str, Any] = {"failed_logins": 0, "last_login_at": now}
    if passwords.HASHER.check_needs_rehash(row["password_hash"]):
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
        expires_at=session_expiry(now, now, settings),
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
