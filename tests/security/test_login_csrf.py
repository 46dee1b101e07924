"""Login CSRF: another site's form cannot log the victim's browser into the attacker's account.

Real app (create_app): the login page sets its `nw_login` cookie and hidden field, POST /login
checks them and the Origin/Referer. Scripts that send JSON without an Origin are unaffected.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from nachtwacht.clock import FakeClock
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.auth_helpers import PASSWORD, add_user, fast_hashing  # noqa: F401 - fixture
from tests.helpers import settings_for

pytestmark = pytest.mark.usefixtures("fast_hashing")
HTML = {"Accept": "text/html"}
# the attacker's own account, which the forged form would log the victim into
MALLORY = {"username": "mallory", "password": PASSWORD, "next": "/"}


@pytest.fixture
def client(sqlite_store: Store, clock: FakeClock) -> Iterator[TestClient]:
    add_user(sqlite_store, clock, "mallory", "viewer")
    site = "site: csrf\nprobes: []\nincidents:\n  public_url: https://monitor.example.org\n"
    app = create_app(settings_for(site, sqlite_store.url), sqlite_store, clock, start_engine=False)
    with TestClient(app) as c:
        yield c


def _page_token(client: TestClient) -> dict[str, str]:
    page = client.get("/login").text
    found = re.search(r'name="login_csrf" value="([^"]+)"', page)
    assert found is not None, "the login page carries no login token"
    return {"login_csrf": found[1]}


def _logged_in(response) -> bool:  # noqa: ANN001 - an httpx Response
    return "nw_session=" in response.headers.get("set-cookie", "")


@pytest.mark.parametrize(
    "came_from",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},  # a sandboxed frame, or a page with Referrer-Policy no-referrer
        {"Referer": "https://evil.example/win-a-prize"},  # a browser that sends no Origin
    ],
)
def test_a_cross_site_form_cannot_log_the_browser_in(
    client: TestClient, came_from: dict[str, str]
) -> None:
    forged = client.post("/login", data=MALLORY, headers=HTML | came_from, follow_redirects=False)
    assert forged.status_code == 403 and not _logged_in(forged)
    assert forged.json()["field"] == "origin"
    # the attacker may even know a login token of their own: without the victim's cookie it
    # is worth nothing, and the origin is refused first anyway
    assert client.get("/api/v1/me").status_code == 401


def test_a_login_form_without_the_login_pages_token_logs_nobody_in(client: TestClient) -> None:
    # neither Origin nor Referer: an old browser, or a privacy extension that strips both
    bare = client.post("/login", data=MALLORY, headers=HTML, follow_redirects=False)
    assert bare.status_code == 303 and not _logged_in(bare)
    assert bare.headers["location"] == "/login?error=expired&next=%2F"
    assert "The login form had expired" in client.get(bare.headers["location"]).text
    # a token that is not this browser's cookie (set by the page just shown) is no better
    other = client.post(
        "/login",
        data=MALLORY | {"login_csrf": "x" * 43},
        headers=HTML,
        follow_redirects=False,
    )
    assert not _logged_in(other)


def test_the_login_pages_own_form_logs_in(client: TestClient) -> None:
    token = _page_token(client)
    cookie = client.get("/login").headers["set-cookie"]
    assert cookie.startswith("nw_login=") and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie and "Path=/login" in cookie
    assert _page_token(client) == token  # a second tab's form stays valid
    ok = client.post(
        "/login",
        data=MALLORY | token,
        headers=HTML | {"Origin": "http://testserver", "Referer": "http://testserver/login"},
        follow_redirects=False,
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/" and _logged_in(ok)
    assert client.get("/api/v1/me").json()["name"] == "mallory"


def test_json_logins_from_another_site_are_refused_and_scripts_still_log_in(
    client: TestClient,
) -> None:
    body = {"username": "mallory", "password": PASSWORD}
    cross = client.post("/login", json=body, headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403 and not _logged_in(cross)
    # curl and scripts send no Origin: unchanged
    script = client.post("/login", json=body)
    assert script.status_code == 200 and _logged_in(script)
    # behind a proxy that rewrites Host, the configured public URL is this site too
    proxied = client.post("/login", json=body, headers={"Origin": "https://monitor.example.org"})
    assert proxied.status_code == 200


def test_a_token_with_foreign_characters_is_refused_not_a_server_error(
    client: TestClient,
) -> None:
    _page_token(client)  # this browser has a login cookie
    odd = client.post(
        "/login",
        data=MALLORY | {"login_csrf": "é" * 43},
        headers={"Accept": "application/json"},
    )
    assert odd.status_code == 403 and odd.json()["field"] == "login_csrf"
    # the session's own CSRF check compares the same way
    client.post("/login", json={"username": "mallory", "password": PASSWORD})
    form = client.post("/logout", data={"csrf_token": "é" * 43}, headers=HTML)
    assert form.status_code == 403 and form.json()["field"] == "csrf_token"
