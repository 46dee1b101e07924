"""Changing one's own password is not a way round the lockout (issue 12: a borrowed session could
guess the current password without limit, throttle or audit)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from nachtwacht.auth import audit
from nachtwacht.clock import FakeClock
from nachtwacht.store.db import Store
from tests.auth_helpers import PASSWORD, add_user, fast_hashing, login, make_app  # noqa: F401

pytestmark = pytest.mark.usefixtures("fast_hashing")
NEW = "a brand new passphrase"


@pytest.fixture
def client(sqlite_store: Store, clock: FakeClock) -> Iterator[TestClient]:
    add_user(sqlite_store, clock, "vera", "viewer")
    with TestClient(make_app(sqlite_store, clock)) as c:
        yield c


def _change(client: TestClient, csrf: str, current: str):  # noqa: ANN202 - a Response
    return client.post(
        "/api/v1/users/vera/password",
        json={"password": NEW, "current_password": current},
        headers={"X-CSRF-Token": csrf},
    )


def _audit(store: Store, action: str) -> list[dict]:
    with store.connect() as conn:
        return audit.audit_log(conn, action=action)


def test_wrong_current_passwords_lock_the_address_and_are_audited(
    client: TestClient, sqlite_store: Store
) -> None:
    csrf = login(client, "vera")
    for _ in range(5):
        wrong = _change(client, csrf, "a guess at it")
        assert wrong.status_code == 403 and wrong.json()["field"] == "current_password"
    # locked now: even the right current password waits, and says for how long
    locked = _change(client, csrf, PASSWORD)
    assert locked.status_code == 429 and locked.headers["Retry-After"] == "900"
    guesses = _audit(sqlite_store, "user.passwd.failed")
    assert [e["detail"]["failures"] for e in reversed(guesses)] == [1, 2, 3, 4, 5]
    assert {(e["actor"], e["target"], e["ip"]) for e in guesses} == {("vera", "vera", "testclient")}
    assert _audit(sqlite_store, "user.locked")[0]["target"] == "vera"
    # the same lock as a login's: this address cannot log in as vera either
    relogin = TestClient(client.app).post(  # type: ignore[arg-type]
        "/login", json={"username": "vera", "password": PASSWORD}
    )
    assert relogin.status_code == 429


def test_wrong_current_passwords_and_wrong_logins_share_one_count(client: TestClient) -> None:
    csrf = login(client, "vera")
    for _ in range(3):
        assert _change(client, csrf, "a guess at it").status_code == 403
    browser = TestClient(client.app)  # type: ignore[arg-type] - same address, no session
    for _ in range(2):  # the fourth and fifth wrong password, as logins
        wrong = browser.post("/login", json={"username": "vera", "password": "nope-nope"})
        assert wrong.status_code == 401
    right = browser.post("/login", json={"username": "vera", "password": PASSWORD})
    assert right.status_code == 429
