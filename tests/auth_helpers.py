"""A small app around the auth router for tests, and cheap argon2 so tests stay fast."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.testclient import TestClient

from nachtwacht.auth import passwords, users
from nachtwacht.auth.api import router as auth_router
from nachtwacht.auth.deps import LOGIN_COOKIE, LOGIN_FIELD, access, actor, audit_change, ingest_key
from nachtwacht.auth.models import AuthSettings
from nachtwacht.clock import FakeClock
from nachtwacht.store.db import Store
from nachtwacht.web import errors
from nachtwacht.web.state import AppState, install
from nachtwacht.web.status import ResponseStatus

PASSWORD = "correct horse battery"


@pytest.fixture
def fast_hashing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """argon2id with the smallest parameters: the code path is the same, 1 ms instead of 100."""
    monkeypatch.setattr(
        passwords, "HASHER", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )
    yield


def protected_router() -> APIRouter:
    """A stand-in for the real routers the lead protects with `access`."""
    router = APIRouter(prefix="/api/v1")

    @router.get("/things")
    async def list_things() -> dict[str, Any]:
        return {"things": []}

    @router.post("/things")
    async def add_thing(request: Request) -> dict[str, Any]:
        # a form post must still reach the handler whole after the CSRF check read it
        form = (await request.body()).decode()
        return {"added": True, "by": actor(request), "body": form}

    return router


def ingest_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    @router.post("/alerts")
    async def post_alert(key: dict[str, Any] = Depends(ingest_key("alerts"))) -> dict[str, Any]:
        return {"accepted": True, "source": key["name"]}

    @router.post("/errors")
    async def post_error(key: dict[str, Any] = Depends(ingest_key("errors"))) -> dict[str, Any]:
        return {"accepted": True, "source": key["name"]}

    return router


def make_app(
    store: Store, clock: FakeClock, auth: AuthSettings | None = None, secure_cookies: bool = False
) -> FastAPI:
    app = FastAPI()
    errors.install(app)
    server = SimpleNamespace(secure_cookies=secure_cookies)
    settings = SimpleNamespace(auth=auth or AuthSettings(), server=server)
    # a runtime stand-in with what the auth dependencies use
    install(app, AppState.of(SimpleNamespace(store=store, clock=clock, settings=settings)))
    app.include_router(auth_router)
    app.include_router(protected_router(), dependencies=[Depends(access)])
    app.include_router(ingest_router())
    app.add_middleware(ResponseStatus, hooks=(audit_change,))
    return app


def add_user(store: Store, clock: FakeClock, name: str, role: str) -> None:
    with store.begin() as conn:
        users.add_user(conn, name, PASSWORD, role, clock.now(), actor="test")


def login(client: TestClient, name: str, password: str = PASSWORD) -> str:
    """Log the client in (cookie kept by the client); returns the session's CSRF token."""
    response = client.post("/login", json={"username": name, "password": password})
    assert response.status_code == 200, response.text
    return response.json()["csrf_token"]


def login_form(client: TestClient) -> dict[str, str]:
    """What the login page gives a browser: its `nw_login` cookie, and the same value as the
    form's hidden field (this app has no pages, so the test plays the page)."""
    token = secrets.token_urlsafe(32)
    client.cookies.set(LOGIN_COOKIE, token, domain="", path="/login")
    return {LOGIN_FIELD: token}
