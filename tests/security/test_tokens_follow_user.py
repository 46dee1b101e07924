"""API tokens follow the user they act for: disabled, deleted or demoted, the token follows at once.

Issue 12: an admin token made by a user who was later disabled kept its admin rights.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from click.testing import Result
from fastapi.testclient import TestClient
from sqlalchemy import delete, text, update
from typer.testing import CliRunner

from nachtwacht.auth import cli, passwords, tokens
from nachtwacht.auth import users as auth_users
from nachtwacht.cli.main import app as main_app
from nachtwacht.clock import FakeClock, SystemClock
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.store.migrate import upgrade
from tests.auth_helpers import add_user, fast_hashing, login, make_app  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("fast_hashing")
PW = "correct horse battery\n"


@pytest.fixture
def client(sqlite_store: Store, clock: FakeClock) -> Iterator[TestClient]:
    add_user(sqlite_store, clock, "ada", "admin")
    add_user(sqlite_store, clock, "root", "admin")
    with TestClient(make_app(sqlite_store, clock)) as c:
        yield c


def _token_of(client: TestClient, user: str, role: str = "admin") -> str:
    """A token made through the API by `user`, in a browser of its own."""
    browser = TestClient(client.app)  # type: ignore[arg-type]
    csrf = login(browser, user)
    body = {"name": f"{user}-script", "role": role}
    made = browser.post("/api/v1/tokens", json=body, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201, made.text
    return made.json()["token"]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_disabled_users_admin_token_stops_working_at_once(client: TestClient) -> None:
    token = _token_of(client, "ada")
    assert client.get("/api/v1/users", headers=_bearer(token)).status_code == 200
    root_token = _token_of(client, "root")
    disabled = client.post("/api/v1/users/ada/disable", headers=_bearer(root_token))
    assert disabled.status_code == 200, disabled.text
    # the very next request, in the same process: nothing cached outlives the disable
    refused = client.get("/api/v1/users", headers=_bearer(token))
    assert refused.status_code == 401
    again = client.post("/api/v1/tokens", json={"name": "x"}, headers=_bearer(token))
    assert again.status_code == 401
    # enabled again, the token works again: it was never revoked, only its owner was stopped
    client.post("/api/v1/users/ada/enable", headers=_bearer(root_token))
    assert client.get("/api/v1/users", headers=_bearer(token)).status_code == 200
    assert client.get("/api/v1/me", headers=_bearer(token)).json()["owner"] == "ada"


def test_a_demoted_users_token_has_at_most_their_new_role(
    client: TestClient, sqlite_store: Store
) -> None:
    token = _token_of(client, "ada")
    # no command demotes a user yet: the store is changed directly, as a future one would
    with sqlite_store.begin() as conn:
        conn.execute(update(t.users).where(t.users.c.username == "ada").values(role="responder"))
    assert client.get("/api/v1/users", headers=_bearer(token)).status_code == 403
    me = client.get("/api/v1/me", headers=_bearer(token)).json()
    assert (me["role"], me["owner"]) == ("responder", "ada")
    assert client.post("/api/v1/things", headers=_bearer(token)).status_code == 200


def test_a_deleted_users_token_stops_working(client: TestClient, sqlite_store: Store) -> None:
    token = _token_of(client, "ada")
    with sqlite_store.begin() as conn:
        conn.execute(delete(t.users).where(t.users.c.username == "ada"))
    assert client.get("/api/v1/me", headers=_bearer(token)).status_code == 401


def test_a_token_made_with_a_token_follows_the_same_owner(
    client: TestClient, sqlite_store: Store
) -> None:
    token = _token_of(client, "ada")
    made = client.post(
        "/api/v1/tokens", json={"name": "grandchild", "role": "responder"}, headers=_bearer(token)
    )
    assert made.status_code == 201
    child = made.json()["token"]
    client.post("/api/v1/users/ada/disable", headers=_bearer(_token_of(client, "root")))
    assert client.get("/api/v1/me", headers=_bearer(child)).status_code == 401
    with sqlite_store.connect() as conn:  # the list says whom each token acts for
        owners = {r["name"]: r["owner"] for r in tokens.list_tokens(conn)}
    assert owners == {"ada-script": "ada", "grandchild": "ada", "root-script": "root"}


def test_tokens_made_through_the_api_before_the_upgrade_follow_their_creator(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(store.engine, "0005")  # before tokens had owners
    with store.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (username, password_hash, role, disabled, created_at, "
                "failed_logins) VALUES ('ada', 'x', 'admin', false, 1, 0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO api_tokens (name, token_hash, role, created_by, created_at) "
                "VALUES ('old', :h, 'admin', 'ada', 1)"
            ),
            {"h": passwords.secret_hash("nwt_old-token")},
        )
    store.migrate()
    with store.begin() as conn:
        auth_users.add_user(conn, "root", "correct horse battery", "admin", clock.now(), actor="t")
        auth_users.set_disabled(conn, "ada", True, clock.now(), actor="root")
        assert tokens.resolve_token(conn, "nwt_old-token", clock.now()) is None


def test_cli_token_create_with_owner_follows_that_user(sqlite_store: Store, tmp_path: Path) -> None:
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(f"site: test\nstore:\n  url: {sqlite_store.url}\n")
    runner = CliRunner()

    def run(app: typer.Typer, *args: str, stdin: str | None = None) -> Result:
        return runner.invoke(app, [*args, "-c", str(config)], input=stdin)

    for name, role in (("carl", "admin"), ("root", "admin"), ("vic", "viewer")):
        added = run(cli.user_app, "add", name, "--role", role, "--password-stdin", stdin=PW)
        assert added.exit_code == 0, added.output
    made = run(cli.token_app, "create", "nightly", "--role", "admin", "--owner", "carl", "--json")
    assert made.exit_code == 0, made.output
    secret = json.loads(made.output)["token"]
    assert run(cli.user_app, "disable", "carl").exit_code == 0
    with sqlite_store.begin() as conn:
        assert tokens.resolve_token(conn, secret, SystemClock().now()) is None
    # an owner cannot hand out more than they have
    # (through the root command, where a refusal becomes one line and its exit code)
    more = runner.invoke(
        main_app, ["token", "create", "x", "--role", "admin", "--owner", "vic", "-c", str(config)]
    )
    assert more.exit_code == 2 and "viewer role" in more.output, more.output
