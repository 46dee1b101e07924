"""auth.service on every backend: passwords, lockout, throttling, sessions, tokens, keys, audit."""

from __future__ import annotations

import csv
import io
import json

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from nachtwacht.auth import audit as auth_audit
from nachtwacht.auth import checks as auth_checks
from nachtwacht.auth import ingest_keys as auth_ingest_keys
from nachtwacht.auth import logins, passwords, tokens
from nachtwacht.auth import sessions as auth_sessions
from nachtwacht.auth import users as auth_users
from nachtwacht.auth.checks import AuthError
from nachtwacht.auth.models import AuthSettings
from nachtwacht.clock import FakeClock
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.auth_helpers import PASSWORD, fast_hashing  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("fast_hashing")
IP = "203.0.113.7"


def _add(store: Store, clock: FakeClock, name: str = "alice", role: str = "responder") -> None:
    with store.begin() as conn:
        auth_users.add_user(conn, name, PASSWORD, role, clock.now(), actor="test")


def _login(
    store: Store,
    clock: FakeClock,
    name: str = "alice",
    password: str = PASSWORD,
    ip: str | None = IP,
    settings: AuthSettings = auth_checks.DEFAULTS,
) -> logins.LoginOutcome:
    with store.begin() as conn:
        return logins.login(
            conn, name, password, clock.now(), ip=ip, user_agent="pytest", settings=settings
        )


def _audit(store: Store, action: str | None = None) -> list[dict]:
    with store.connect() as conn:
        return auth_audit.audit_log(conn, None, 1000, action=action)


def _dump(store: Store) -> str:
    """Every value of the secret-holding tables, as one string to search for plaintexts."""
    with store.connect() as conn:
        rows = [
            dict(r)
            for table in (t.users, t.sessions, t.api_tokens, t.ingest_keys, t.audit_log)
            for r in conn.execute(select(table)).mappings()
        ]
    return json.dumps(rows, default=str)


# -- hashing ---------------------------------------------------------------------------------


def test_password_hash_is_argon2id_and_verifies_only_the_right_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(passwords, "HASHER", PasswordHasher())  # the production parameters
    hashed = passwords.hash_password("s3cret-passphrase")
    assert hashed.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert "s3cret-passphrase" not in hashed
    assert passwords.verify_password(hashed, "s3cret-passphrase")
    assert not passwords.verify_password(hashed, "s3cret-passphrasE")
    assert not passwords.verify_password("not a hash", "s3cret-passphrase")
    assert passwords.hash_password("s3cret-passphrase") != hashed  # salted


def test_weak_password_and_bad_username_are_refused_naming_the_field(
    sqlite_store: Store, clock: FakeClock
) -> None:
    store = sqlite_store  # its SQL runs on every backend in the tests above
    with store.begin() as conn, pytest.raises(AuthError) as short:
        auth_users.add_user(conn, "bob", "short", "viewer", clock.now(), actor="test")
    assert short.value.field == "password" and "at least 10" in str(short.value)
    with store.begin() as conn, pytest.raises(AuthError) as name:
        auth_users.add_user(conn, "bob smith", PASSWORD, "viewer", clock.now(), actor="test")
    assert name.value.field == "username"
    with store.begin() as conn, pytest.raises(AuthError) as role:
        auth_users.add_user(conn, "bob", PASSWORD, "root", clock.now(), actor="test")
    assert role.value.field == "role"
    _add(store, clock, "Bob")
    with store.begin() as conn, pytest.raises(AuthError) as twice:
        auth_users.add_user(conn, "BOB", PASSWORD, "viewer", clock.now(), actor="test")
    assert twice.value.kind == "conflict"
    with store.connect() as conn:
        assert [u["username"] for u in auth_users.list_users(conn, clock.now())] == ["bob"]


def test_first_start_creates_admin_with_a_random_password_once(
    store: Store, clock: FakeClock
) -> None:
    with store.begin() as conn:
        first = auth_users.ensure_admin(conn, clock.now())
    with store.begin() as conn:
        second = auth_users.ensure_admin(conn, clock.now())
    assert first is not None and len(first) >= 20
    assert second is None
    outcome = _login(store, clock, "admin", first)
    assert outcome.ok and outcome.role == "admin"
    assert first not in _dump(store)
    assert _audit(store, "user.bootstrap")[0]["target"] == "admin"


# -- login, lockout, throttle ---------------------------------------------------------------


def test_login_opens_a_session_and_audits_success_with_the_address(
    store: Store, clock: FakeClock
) -> None:
    _add(store, clock)
    outcome = _login(store, clock, "Alice")  # usernames are case-insensitive
    assert outcome.ok and outcome.username == "alice" and outcome.role == "responder"
    assert outcome.token and outcome.csrf_token
    with store.begin() as conn:
        principal = auth_sessions.resolve_session(conn, outcome.token, clock.now())
    assert principal is not None and principal.name == "alice"
    assert principal.session_id == outcome.session_id
    [entry] = _audit(store, "login.success")
    assert entry["actor"] == "alice" and entry["ip"] == IP
    assert entry["detail"] == {"session_id": outcome.session_id}
    assert outcome.token not in _dump(store)  # only its hash is kept


def test_failed_logins_are_audited_with_address_and_reason(store: Store, clock: FakeClock) -> None:
    _add(store, clock)
    assert _login(store, clock, "alice", "wrong password!").status_code == 401
    assert _login(store, clock, "mallory", "whatever", ip="198.51.100.9").status_code == 401
    entries = {e["target"]: e for e in _audit(store, "login.failed")}
    assert entries["alice"]["ip"] == IP
    assert entries["alice"]["detail"] == {"reason": "wrong password", "failures": 1}
    assert entries["mallory"]["ip"] == "198.51.100.9"
    # an unknown name is counted like a real one: the lockout cannot tell them apart
    assert entries["mallory"]["detail"] == {"reason": "unknown user", "failures": 1}


def test_five_wrong_passwords_lock_the_account_until_the_lock_time_passes(
    store: Store, clock: FakeClock
) -> None:
    _add(store, clock)
    for attempt in range(1, 5):
        outcome = _login(store, clock, password=f"wrong-{attempt}")
        assert (outcome.status_code, outcome.reason) == (401, "wrong")
        clock.advance(10)
    fifth = _login(store, clock, password="wrong-5")
    assert fifth.reason == "locked" and "locked for 15 minutes" in fifth.message
    # even the right password is refused while locked, and says until when
    clock.advance(14 * 60)
    locked = _login(store, clock)
    assert (locked.ok, locked.status_code, locked.reason) == (False, 429, "locked")
    assert locked.retry_after == pytest.approx(60)
    with store.connect() as conn:
        [user] = auth_users.list_users(conn, clock.now())
    assert user["locked"] and user["failed_logins"] == 5
    assert _audit(store, "user.locked")[0]["target"] == "alice"
    assert _audit(store, "login.locked")[0]["ip"] == IP
    clock.advance(61)
    assert _login(store, clock).ok
    with store.connect() as conn:
        [user] = auth_users.list_users(conn, clock.now())
    assert not user["locked"] and user["failed_logins"] == 0


def test_a_success_resets_the_count_of_consecutive_failures(
    sqlite_store: Store, clock: FakeClock
) -> None:
    store = sqlite_store  # its SQL runs on every backend in the tests above
    _add(store, clock)
    for _ in range(4):
        _login(store, clock, password="nope-nope-nope")
    assert _login(store, clock).ok
    for _ in range(4):
        assert _login(store, clock, password="nope-nope-nope").reason == "wrong"
    assert _login(store, clock).ok


def test_an_expired_lock_gives_a_fresh_count_not_an_instant_relock(
    sqlite_store: Store, clock: FakeClock
) -> None:
    store = sqlite_store  # its SQL runs on every backend in the tests above
    _add(store, clock)
    settings = AuthSettings(lockout_after=3, lockout_for="5m")
    for _ in range(3):
        _login(store, clock, password="nope-nope-nope", settings=settings)
    clock.advance(301)
    assert _login(store, clock, password="nope-nope-nope", settings=settings).reason == "wrong"
    assert _login(store, clock, settings=settings).ok


def test_lockout_counts_per_user(store: Store, clock: FakeClock) -> None:
    _add(store, clock, "alice")
    _add(store, clock, "bob")
    for _ in range(5):
        _login(store, clock, "alice", "nope-nope-nope", ip=None)
    assert _login(store, clock, "alice", ip=None).reason == "locked"
    assert _login(store, clock, "bob", ip=None).ok


def test_one_address_guessing_across_usernames_is_throttled(store: Store, clock: FakeClock) -> None:
    for name in ("alice", "bob", "carol"):
        _add(store, clock, name)
    names = ["alice", "bob", "carol", "dave", "erin"]
    for i in range(10):
        outcome = _login(store, clock, names[i % 5], f"guess-{i}")
        assert outcome.reason == "wrong"  # 2 per user: nobody is locked
        clock.advance(3)
    throttled = _login(store, clock, "alice")  # even the right password waits
    assert (throttled.status_code, throttled.reason) == (429, "throttled")
    assert throttled.retry_after == pytest.approx(30)
    assert _login(store, clock, "alice", ip="198.51.100.1").ok  # another address is not slowed
    assert _audit(store, "login.throttled")[0]["ip"] == IP
    clock.advance(31)  # the oldest failures leave the minute
    assert _login(store, clock, "alice").ok


def test_disabled_user_cannot_log_in_and_their_sessions_end(store: Store, clock: FakeClock) -> None:
    _add(store, clock)
    _add(store, clock, "root", "admin")
    session = _login(store, clock)
    with store.begin() as conn:
        auth_users.set_disabled(conn, "alice", True, clock.now(), actor="root")
    refused = _login(store, clock)
    assert (refused.status_code, refused.message) == (401, logins.WRONG)
    assert _audit(store, "login.failed")[0]["detail"] == {"reason": "disabled", "failures": 1}
    with store.begin() as conn:
        assert auth_sessions.resolve_session(conn, session.token or "", clock.now()) is None
        auth_users.set_disabled(conn, "alice", False, clock.now(), actor="root")
    assert _login(store, clock).ok


def test_the_last_enabled_admin_cannot_be_disabled(sqlite_store: Store, clock: FakeClock) -> None:
    store = sqlite_store  # its SQL runs on every backend in the tests above
    _add(store, clock, "root", "admin")
    with store.begin() as conn, pytest.raises(AuthError) as exc:
        auth_users.set_disabled(conn, "root", True, clock.now(), actor="root")
    assert exc.value.kind == "conflict"


def test_enable_lifts_a_lock(sqlite_store: Store, clock: FakeClock) -> None:
    store = sqlite_store  # its SQL runs on every backend in the tests above
    _add(store, clock)
    for _ in range(5):
        _login(store, clock, password="nope-nope-nope")
    with store.begin() as conn:
        auth_users.set_disabled(conn, "alice", False, clock.now(), actor="root")
    assert _login(store, clock).ok


# -- sessions --------------------------------------------------------------------------------


def test_own_password_change_ends_other_sessions_and_needs_the_current_one(
    store: Store, clock: FakeClock
) -> None:
    _add(store, clock)
    a, b = _login(store, clock), _login(store, clock)
    with store.begin() as conn:
        wrong = logins.change_own_password(
            conn, "alice", "wrong guess", "a new passphrase", clock.now(), ip=IP
        )
    assert (wrong.ok, wrong.status_code, wrong.field) == (False, 403, "current_password")
    with store.begin() as conn:
        outcome = logins.change_own_password(
            conn,
            "alice",
            PASSWORD,
            "a new passphrase",
            clock.now(),
            ip=IP,
            keep_session=a.session_id,
        )
    assert outcome.ok and outcome.sessions_revoked == 1
    with store.begin() as conn:
        assert auth_sessions.resolve_session(conn, a.token or "", clock.now()) is not None
        assert auth_sessions.resolve_session(conn, b.token or "", clock.now()) is None
    assert not _login(store, clock).ok
    assert _login(store, clock, password="a new passphrase").ok


def test_sessions_are_listed_per_user_and_revoked_one_or_all(
    store: Store, clock: FakeClock
) -> None:
    _add(store, clock, "alice")
    _add(store, clock, "bob")
    a1, a2, b1 = (
        _login(store, clock, "alice"),
        _login(store, clock, "alice"),
        _login(store, clock, "bob"),
    )
    with store.begin() as conn:
        assert {s["id"] for s in auth_sessions.list_sessions(conn, clock.now(), "alice")} == {
            a1.session_id,
            a2.session_id,
        }
        assert auth_sessions.list_sessions(conn, clock.now(), "alice")[0]["ip"] == IP
        with pytest.raises(AuthError):  # bob cannot end alice's session
            auth_sessions.revoke_session(
                conn, a1.session_id or 0, clock.now(), actor="bob", owner="bob"
            )
        auth_sessions.revoke_session(conn, a1.session_id or 0, clock.now(), actor="alice")
        assert auth_sessions.resolve_session(conn, a1.token or "", clock.now()) is None
        assert auth_sessions.resolve_session(conn, a2.token or "", clock.now()) is not None
    _login(store, clock, "alice")
    with store.begin() as conn:
        assert auth_sessions.revoke_all_sessions(conn, "alice", clock.now(), actor="root") == 2
        assert auth_sessions.list_sessions(conn, clock.now(), "alice") == []
        assert auth_sessions.resolve_session(conn, a2.token or "", clock.now()) is None
        assert auth_sessions.resolve_session(conn, b1.token or "", clock.now()) is not None
    entry = _audit(store, "session.revoke_all")[0]
    assert (entry["actor"], entry["target"], entry["detail"]["sessions_revoked"]) == (
        "root",
        "alice",
        2,
    )


def test_a_session_ends_after_idling_and_at_its_maximum_age(store: Store, clock: FakeClock) -> None:
    _add(store, clock)
    settings = AuthSettings(session_idle="1h", session_max="3h")
    idle = _login(store, clock, settings=settings)
    busy = _login(store, clock, settings=settings)
    start = clock.now()

    def alive(outcome: logins.LoginOutcome) -> bool:
        with store.begin() as conn:
            token = outcome.token or ""
            return auth_sessions.resolve_session(conn, token, clock.now(), settings) is not None

    clock.advance(50 * 60)
    assert alive(busy)  # busy is used every 50 minutes; idle is left alone
    clock.advance(50 * 60)
    assert alive(busy) and not alive(idle)  # idle: 100 minutes without a request
    clock.advance(50 * 60)
    assert alive(busy)
    clock.advance(30 * 60)
    assert clock.now() - start == 3 * 3600
    assert not alive(busy)  # the maximum age ends it, however busy


def test_logout_ends_the_session(sqlite_store: Store, clock: FakeClock) -> None:
    store = sqlite_store  # its SQL runs on every backend in the tests above
    _add(store, clock)
    outcome = _login(store, clock)
    with store.begin() as conn:
        assert auth_sessions.end_session(conn, outcome.token or "", clock.now(), ip=IP)
        assert not auth_sessions.end_session(conn, outcome.token or "", clock.now(), ip=IP)
        assert auth_sessions.resolve_session(conn, outcome.token or "", clock.now()) is None
    assert _audit(store, "logout")[0]["ip"] == IP


# -- tokens and ingest keys ------------------------------------------------------------------


def test_api_token_is_shown_once_stored_hashed_and_refused_after_revoke(
    store: Store, clock: FakeClock
) -> None:
    with store.begin() as conn:
        created = tokens.create_token(conn, "backup script", "responder", clock.now(), actor="root")
    token = created["token"]
    assert token.startswith("nwt_") and len(token) > 40
    assert token not in _dump(store)
    with store.begin() as conn:
        listed = tokens.list_tokens(conn)
        assert "token" not in listed[0] and listed[0]["name"] == "backup script"
        principal = tokens.resolve_token(conn, token, clock.now())
        assert principal is not None and (principal.kind, principal.role) == ("token", "responder")
        assert tokens.resolve_token(conn, token + "x", clock.now()) is None
        tokens.revoke_token(conn, created["id"], clock.now(), actor="root")
        assert tokens.resolve_token(conn, token, clock.now()) is None
        assert tokens.list_tokens(conn) == []
        assert tokens.list_tokens(conn, include_revoked=True)[0]["revoked_at"] is not None
    assert [e["action"] for e in _audit(store, "token.")] == ["token.revoke", "token.create"]


def test_last_used_is_written_at_most_once_a_minute(store: Store, clock: FakeClock) -> None:
    with store.begin() as conn:
        token = tokens.create_token(conn, "poller", "viewer", clock.now(), actor="root")["token"]
    start = clock.now()

    def last_used() -> float:
        with store.connect() as conn:
            return conn.execute(select(t.api_tokens.c.last_used_at)).scalar_one()

    for _ in range(6):  # a request every 15 s for 75 s
        with store.begin() as conn:
            assert tokens.resolve_token(conn, token, clock.now()) is not None
        clock.advance(15)
    # used at 0, 15, 30, 45, 60, 75: written at 0 and at 60 only
    assert last_used() == start + 60


def test_ingest_key_is_checked_against_its_scope(store: Store, clock: FakeClock) -> None:
    with store.begin() as conn:
        alerts = auth_ingest_keys.create_ingest_key(
            conn, "alertmanager", "alerts", clock.now(), actor="r"
        )
        every = auth_ingest_keys.create_ingest_key(
            conn, "everything", "all", clock.now(), actor="r"
        )
    assert alerts["key"] not in _dump(store)
    with store.begin() as conn:
        assert auth_ingest_keys.resolve_ingest_key(conn, alerts["key"], "alerts", clock.now())[
            "name"
        ] == ("alertmanager")
        assert (
            auth_ingest_keys.resolve_ingest_key(conn, every["key"], "errors", clock.now())["id"]
            == (every["id"])
        )
    for key, scope, status in (
        (alerts["key"], "errors", 403),
        (None, "alerts", 401),
        ("nwk_made-up", "alerts", 401),
    ):
        with store.begin() as conn, pytest.raises(AuthError) as exc:
            auth_ingest_keys.resolve_ingest_key(conn, key, scope, clock.now())
        assert exc.value.http_status == status
    with store.begin() as conn:
        auth_ingest_keys.revoke_ingest_key(conn, alerts["id"], clock.now(), actor="r")
    with store.begin() as conn, pytest.raises(AuthError):
        auth_ingest_keys.resolve_ingest_key(conn, alerts["key"], "alerts", clock.now())


# -- audit log -------------------------------------------------------------------------------


def test_audit_log_filters_by_time_and_exports_csv_and_json_lines(
    sqlite_store: Store, clock: FakeClock
) -> None:
    store = sqlite_store  # its SQL runs on every backend in the tests above
    with store.begin() as conn:
        auth_audit.audit(conn, "alice", "user.add", "bob", {"role": "viewer"}, IP, clock.now())
        clock.advance(100)
        auth_audit.audit(conn, "alice", "user.disable", "=cmd()", None, IP, clock.now())
    with store.connect() as conn:
        recent = auth_audit.audit_log(conn, clock.now() - 50, 10)
        everything = auth_audit.audit_log(conn, None, 10)
    assert [e["action"] for e in recent] == ["user.disable"]
    assert [e["action"] for e in everything] == ["user.disable", "user.add"]
    rows = list(csv.DictReader(io.StringIO(auth_audit.export_csv(everything))))
    assert rows[1]["actor"] == "alice" and rows[1]["ip"] == IP
    assert json.loads(rows[1]["detail"]) == {"role": "viewer"}
    assert rows[0]["target"] == "'=cmd()"  # never a formula in a spreadsheet
    lines = auth_audit.export_jsonl(everything).splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["user.disable", "user.add"]
