"""The lockout is per account and address (issue 12: five tries from anywhere kept `admin`
locked out). On every store backend: the counting is one upsert per dialect."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from nachtwacht.auth import audit, checks, logins, users
from nachtwacht.auth.models import AuthSettings
from nachtwacht.clock import FakeClock
from nachtwacht.store.db import Store
from tests.auth_helpers import PASSWORD, fast_hashing  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("fast_hashing")
GUESSER = "203.0.113.66"
OWNER = "192.0.2.10"


def _add(store: Store, clock: FakeClock, name: str, role: str = "admin") -> None:
    with store.begin() as conn:
        users.add_user(conn, name, PASSWORD, role, clock.now(), actor="test")


def _login(
    store: Store,
    clock: FakeClock,
    name: str,
    password: str,
    ip: str,
    settings: AuthSettings = checks.DEFAULTS,
) -> logins.LoginOutcome:
    with store.begin() as conn:
        return logins.login(conn, name, password, clock.now(), ip=ip, settings=settings)


def test_a_guesser_at_another_address_cannot_lock_the_owner_out(
    store: Store, clock: FakeClock
) -> None:
    _add(store, clock, "admin")
    for _ in range(5):
        _login(store, clock, "admin", "guess-guess-guess", GUESSER)
        clock.advance(1)
    # the guesser's address is locked out of `admin`, even with the right password ...
    locked = _login(store, clock, "admin", PASSWORD, GUESSER)
    assert (locked.ok, locked.status_code, locked.reason) == (False, 429, "locked")
    # ... and the owner, elsewhere, logs in as usual
    assert _login(store, clock, "admin", PASSWORD, OWNER).ok
    # the owner's success does not lift the guesser's lock
    assert _login(store, clock, "admin", PASSWORD, GUESSER).reason == "locked"


def test_an_admin_sees_which_addresses_are_locked_and_enable_lifts_them(
    store: Store, clock: FakeClock
) -> None:
    _add(store, clock, "admin")
    _add(store, clock, "alice", "responder")
    for _ in range(5):
        _login(store, clock, "alice", "guess-guess-guess", GUESSER)
    with store.connect() as conn:
        user = users.get_user(conn, "alice", clock.now())
    assert user["locked"] and user.get("locked_from") == [GUESSER]
    with store.begin() as conn:  # `nachtwacht user enable alice`, POST /api/v1/users/alice/enable
        users.set_disabled(conn, "alice", False, clock.now(), actor="admin")
    with store.connect() as conn:
        user = users.get_user(conn, "alice", clock.now())
        [entry] = audit.audit_log(conn, action="user.enable")
    assert not user["locked"] and user["locked_from"] == []
    assert entry["detail"] == {"unlocked": 1}
    assert _login(store, clock, "alice", PASSWORD, GUESSER).ok


def test_parallel_guesses_of_an_unknown_name_lock_it_like_a_real_one_without_errors(
    store: Store, clock: FakeClock
) -> None:
    """Parallel first guesses race to create the count; none may fail or be lost."""
    _add(store, clock, "alice", "responder")
    # 16 guesses from one address: more than its throttle across names would let through
    settings = AuthSettings(ip_max_failures=100)

    def guess(name: str) -> logins.LoginOutcome:
        return _login(store, clock, name, "guess-guess-guess", GUESSER, settings)

    names = ["ghost", "alice"] * 8
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(zip(names, pool.map(guess, names), strict=True))
    assert {o.status_code for _, o in outcomes} <= {401, 429}
    with store.connect() as conn:
        failed = audit.audit_log(conn, action="login.failed")
    for name in ("ghost", "alice"):
        # every guess was counted once (1, 2, 3, ... with no gap and no repeat), until the lock
        counted = sorted(e["detail"].get("failures", 0) for e in failed if e["target"] == name)
        assert counted == list(range(1, len(counted) + 1)), (name, counted)
        refused = [o for n, o in outcomes if n == name and o.status_code == 429]
        assert len(counted) >= 5 and len(counted) + len(refused) == 8, (name, counted)
        again = _login(store, clock, name, PASSWORD, GUESSER, settings)
        assert (again.status_code, again.reason) == (429, "locked"), name
