"""A refused login says nothing about whether the account exists (issue 12: the fifth wrong
password answered differently for real accounts than for unknown names)."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient

from nachtwacht.auth import passwords, users
from nachtwacht.auth.models import AuthSettings
from nachtwacht.clock import FakeClock
from nachtwacht.store.db import Store
from tests.auth_helpers import PASSWORD, add_user, fast_hashing, make_app  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("fast_hashing")
# the address throttle spans names and is the same for all: out of the way of the comparison
SETTINGS = AuthSettings(ip_max_failures=1000)
# (what is tried, password, from where): a real account with a wrong password, a name that does
# not exist, and a disabled account with its right password
CASES = {
    "real": ("alice", "not her password", "198.51.100.1"),
    "unknown": ("nobody", "not her password", "198.51.100.2"),
    "disabled": ("dora", PASSWORD, "198.51.100.3"),
}


@pytest.fixture
def app(sqlite_store: Store, clock: FakeClock) -> FastAPI:
    for name in ("alice", "dora", "root"):
        add_user(sqlite_store, clock, name, "admin" if name == "root" else "responder")
    with sqlite_store.begin() as conn:
        users.set_disabled(conn, "dora", True, clock.now(), actor="root")
    return make_app(sqlite_store, clock, SETTINGS)


def _answers(app: FastAPI, name: str, password: str, address: str) -> list[tuple]:
    with TestClient(app, client=(address, 40000)) as c:
        out = []
        for _ in range(SETTINGS.lockout_after + 2):
            r = c.post("/login", json={"username": name, "password": password})
            headers = sorted((k, v) for k, v in r.headers.items() if k != "date")
            out.append((r.status_code, r.text, headers))
        return out


def test_every_refused_login_answers_alike_for_real_unknown_and_disabled_names(
    app: FastAPI,
) -> None:
    answers = {case: _answers(app, *args) for case, args in CASES.items()}
    assert answers["real"] == answers["unknown"] == answers["disabled"]
    # and the lockout did happen, to all three alike: the fifth locks, the rest are refused
    assert [a[0] for a in answers["unknown"]] == [401] * 5 + [429] * 2


def test_every_refused_login_costs_the_same_argon2_work(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timing class: one argon2 verification per counted attempt, none once locked."""
    calls: list[int] = []

    class Counting(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002
            calls.append(1)
            return super().verify(hash, password)

    monkeypatch.setattr(passwords, "HASHER", Counting(time_cost=1, memory_cost=8, parallelism=1))
    work = {}
    for case, (name, password, address) in CASES.items():
        with TestClient(app, client=(address, 40000)) as c:
            per_attempt = []
            for _ in range(SETTINGS.lockout_after + 2):
                before = len(calls)
                c.post("/login", json={"username": name, "password": password})
                per_attempt.append(len(calls) - before)
        work[case] = per_attempt
    assert work["real"] == work["unknown"] == work["disabled"] == [1] * 5 + [0] * 2
