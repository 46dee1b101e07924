"""The auth router and dependencies over HTTP: cookies, CSRF, roles, tokens, keys, audit."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from nachtwacht.auth import users
from nachtwacht.clock import FakeClock
from nachtwacht.store.db import Store
from tests.auth_helpers import PASSWORD, add_user, fast_hashing, login, login_form, make_app  # noqa: F401

pytestmark = pytest.mark.usefixtures("fast_hashing")


@pytest.fixture
def client(sqlite_store: Store, clock: FakeClock) -> Iterator[TestClient]:
    for name, role in (("vera", "viewer"), ("rob", "responder"), ("ada", "admin")):
        add_user(sqlite_store, clock, name, role)
    with TestClient(make_app(sqlite_store, clock)) as c:
        yield c


def _fresh(client: TestClient, **kwargs: object) -> TestClient:
    """A second browser on the same app (its own cookie jar)."""
    return TestClient(client.app, **kwargs)  # type: ignore[arg-type]


def _token(client: TestClient, role: str) -> str:
    admin = _fresh(client)
    csrf = login(admin, "ada")
    response = admin.post(
        "/api/v1/tokens", json={"name": f"{role} script", "role": role}, headers=_h(csrf)
    )
    assert response.status_code == 201, response.text
    return response.json()["token"]


def _h(csrf: str) -> dict[str, str]:
    return {"X-CSRF-Token": csrf}


# -- anonymous and login --------------------------------------------------------------------


def test_anonymous_requests_are_refused_with_json_401(client: TestClient) -> None:
    for method, path in (
        ("GET", "/api/v1/things"),
        ("POST", "/api/v1/things"),
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/users"),
        ("GET", "/api/v1/audit"),
        ("POST", "/api/v1/tokens"),
    ):
        response = client.request(method, path)
        assert response.status_code == 401, path
        assert response.json() == {"detail": "login required", "field": None}


def test_login_sets_an_httponly_samesite_cookie_and_returns_the_csrf_token(
    client: TestClient,
) -> None:
    response = client.post("/login", json={"username": "rob", "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["user"] == "rob" and body["role"] == "responder" and body["csrf_token"]
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("nw_session=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http in this test
    me = client.get("/api/v1/me").json()
    assert me == {
        "kind": "user",
        "name": "rob",
        "role": "responder",
        "session_id": me["session_id"],
        "csrf_token": body["csrf_token"],
    }


def test_cookie_is_secure_on_https(client: TestClient) -> None:
    browser = _fresh(client, base_url="https://nachtwacht.example")
    response = browser.post("/login", json={"username": "rob", "password": PASSWORD})
    assert "Secure" in response.headers["set-cookie"]


def test_cookie_is_secure_when_the_settings_say_so(sqlite_store: Store, clock: FakeClock) -> None:
    add_user(sqlite_store, clock, "rob", "responder")
    app = make_app(sqlite_store, clock, secure_cookies=True)
    with TestClient(app) as browser:
        response = browser.post("/login", json={"username": "rob", "password": PASSWORD})
    assert "Secure" in response.headers["set-cookie"]


def test_wrong_password_is_401_and_the_fifth_locks_with_429(client: TestClient) -> None:
    for _ in range(4):
        response = client.post("/login", json={"username": "rob", "password": "nope-nope-nope"})
        assert response.status_code == 401
        assert response.json() == {"detail": "wrong username or password", "field": None}
    fifth = client.post("/login", json={"username": "rob", "password": "nope-nope-nope"})
    assert "locked for 15 minutes" in fifth.json()["detail"]
    locked = client.post("/login", json={"username": "rob", "password": PASSWORD})
    assert locked.status_code == 429
    assert locked.headers["Retry-After"] == "900"
    assert "locked" in locked.json()["detail"]
    assert "set-cookie" not in locked.headers


def test_login_accepts_an_html_form_and_redirects_to_next(client: TestClient) -> None:
    response = client.post(
        "/login",
        data={
            "username": "rob",
            "password": PASSWORD,
            "next": "/incidents/4",
            **login_form(client),
        },
        headers={"Accept": "text/html"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/incidents/4"
    assert client.get("/api/v1/me").json()["name"] == "rob"
    browser = _fresh(client)
    evil = browser.post(
        "/login",
        data={
            "username": "rob",
            "password": PASSWORD,
            "next": "//evil.example/",
            **login_form(browser),
        },
        headers={"Accept": "text/html"},
        follow_redirects=False,
    )
    assert evil.headers["location"] == "/"
    browser = _fresh(client)
    wrong = browser.post(
        "/login",
        data={"username": "rob", "password": "nope-nope-nope", "next": "/x", **login_form(browser)},
        headers={"Accept": "text/html"},
        follow_redirects=False,
    )
    assert wrong.status_code == 303
    assert wrong.headers["location"] == "/login?error=wrong&next=%2Fx"


def test_login_with_a_missing_field_names_it(client: TestClient) -> None:
    response = client.post("/login", json={"username": "rob"})
    assert response.status_code == 422 and response.json()["field"] == "password"


def test_login_attempts_are_audited_with_the_client_address(client: TestClient) -> None:
    client.post("/login", json={"username": "rob", "password": "nope-nope-nope"})
    login(client, "rob")
    admin = _fresh(client)
    login(admin, "ada")
    entries = admin.get("/api/v1/audit", params={"action": "login."}).json()
    assert [(e["action"], e["target"], e["ip"]) for e in entries] == [
        ("login.success", "ada", "testclient"),
        ("login.success", "rob", "testclient"),
        ("login.failed", "rob", "testclient"),
    ]


def test_logout_ends_the_session_and_clears_the_cookie(client: TestClient) -> None:
    csrf = login(client, "rob")
    assert client.post("/logout").status_code == 403  # CSRF applies to logout too
    response = client.post("/logout", headers=_h(csrf))
    assert response.json() == {"logged_out": True}
    assert 'nw_session=""' in response.headers["set-cookie"]
    assert client.get("/api/v1/things").status_code == 401


def test_a_new_login_ends_the_browsers_previous_session(client: TestClient) -> None:
    login(client, "rob")
    old = client.cookies["nw_session"]
    login(client, "rob")
    stale = _fresh(client, cookies={"nw_session": old})
    assert stale.get("/api/v1/things").status_code == 401


# -- CSRF -------------------------------------------------------------------------------------


def test_cookie_session_post_without_csrf_token_is_refused(client: TestClient) -> None:
    login(client, "rob")
    response = client.post("/api/v1/things", json={})
    assert response.status_code == 403
    assert response.json()["field"] == "csrf_token"
    wrong = client.post("/api/v1/things", headers=_h("not-the-token"))
    assert wrong.status_code == 403


def test_cookie_session_post_with_csrf_header_is_accepted(client: TestClient) -> None:
    csrf = login(client, "rob")
    response = client.post("/api/v1/things", headers=_h(csrf))
    assert response.status_code == 200 and response.json()["by"] == "rob"


def test_form_post_with_csrf_field_is_accepted_and_the_handler_still_reads_the_body(
    client: TestClient,
) -> None:
    csrf = login(client, "rob")
    response = client.post("/api/v1/things", data={"csrf_token": csrf, "title": "disk full"})
    assert response.status_code == 200
    assert "title=disk+full" in response.json()["body"]
    refused = client.post("/api/v1/things", data={"title": "disk full"})
    assert refused.status_code == 403


def test_csrf_token_of_another_session_is_refused(client: TestClient) -> None:
    login(client, "rob")
    other = _fresh(client)
    other_csrf = login(other, "rob")
    assert client.post("/api/v1/things", headers=_h(other_csrf)).status_code == 403


def test_token_post_needs_no_csrf_token(client: TestClient) -> None:
    token = _token(client, "responder")
    response = _fresh(client).post("/api/v1/things", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.json()["by"] == "token:responder script"


# -- roles ------------------------------------------------------------------------------------


def test_viewer_can_read_but_not_post(client: TestClient) -> None:
    csrf = login(client, "vera")
    assert client.get("/api/v1/things").status_code == 200
    response = client.post("/api/v1/things", headers=_h(csrf))
    assert response.status_code == 403
    assert "responder role" in response.json()["detail"]


def test_viewer_token_cannot_post(client: TestClient) -> None:
    token = _token(client, "viewer")
    api = _fresh(client, headers={"Authorization": f"Bearer {token}"})
    assert api.get("/api/v1/things").status_code == 200
    assert api.post("/api/v1/things").status_code == 403


def test_responder_cannot_manage_users_tokens_or_read_the_audit_log(client: TestClient) -> None:
    csrf = login(client, "rob")
    h = _h(csrf)
    for method, path, body in (
        ("GET", "/api/v1/users", None),
        ("POST", "/api/v1/users", {"username": "eve", "password": PASSWORD, "role": "admin"}),
        ("POST", "/api/v1/users/vera/disable", None),
        ("POST", "/api/v1/users/vera/password", {"password": "taken over!!"}),
        ("GET", "/api/v1/tokens", None),
        ("POST", "/api/v1/tokens", {"name": "x", "role": "admin"}),
        ("GET", "/api/v1/ingest-keys", None),
        ("GET", "/api/v1/audit", None),
        ("GET", "/api/v1/sessions?all=true", None),
    ):
        response = client.request(method, path, json=body, headers=h)
        assert response.status_code == 403, (method, path, response.text)
        assert "admin role" in response.json()["detail"]


def test_admin_manages_users_and_every_change_is_audited(client: TestClient) -> None:
    csrf = login(client, "ada")
    h = _h(csrf)
    created = client.post(
        "/api/v1/users", json={"username": "Eve", "password": PASSWORD, "role": "viewer"}, headers=h
    )
    assert created.status_code == 201 and created.json()["username"] == "eve"
    assert client.post("/api/v1/users/eve/disable", headers=h).json()["disabled"] is True
    assert (
        _fresh(client).post("/login", json={"username": "eve", "password": PASSWORD}).status_code
        == 401
    )
    assert client.post("/api/v1/users/eve/enable", headers=h).json()["disabled"] is False
    changed = client.post(
        "/api/v1/users/eve/password", json={"password": "a new passphrase"}, headers=h
    )
    assert changed.json()["password_changed"] is True
    login(_fresh(client), "eve", "a new passphrase")
    names = [u["username"] for u in client.get("/api/v1/users").json()]
    assert names == ["ada", "eve", "rob", "vera"]
    actions = [e["action"] for e in client.get("/api/v1/audit", params={"action": "user."}).json()]
    assert actions == ["user.passwd", "user.enable", "user.disable", "user.add"] + ["user.add"] * 3
    assert client.get("/api/v1/audit").json()[0]["ip"] == "testclient"


def test_users_change_their_own_password_only_with_the_current_one(client: TestClient) -> None:
    csrf = login(client, "vera")
    other = _fresh(client)
    login(other, "vera")
    wrong = client.post(
        "/api/v1/users/vera/password",
        json={"password": "a new passphrase", "current_password": "guess-guess"},
        headers=_h(csrf),
    )
    assert wrong.status_code == 403 and wrong.json()["field"] == "current_password"
    ok = client.post(
        "/api/v1/users/vera/password",
        json={"password": "a new passphrase", "current_password": PASSWORD},
        headers=_h(csrf),
    )
    assert ok.json()["sessions_revoked"] == 1  # the other browser, not this one
    assert client.get("/api/v1/me").status_code == 200
    assert other.get("/api/v1/me").status_code == 401


# -- sessions ---------------------------------------------------------------------------------


def test_ids_beyond_32_bits_are_a_422_naming_the_field(client: TestClient) -> None:
    csrf = login(client, "ada")
    for path in ("/api/v1/sessions/", "/api/v1/tokens/", "/api/v1/ingest-keys/"):
        response = client.delete(f"{path}{2**40}", headers=_h(csrf))
        assert response.status_code == 422, path


def test_sessions_are_listed_per_user_and_revocable(client: TestClient) -> None:
    phone, laptop = _fresh(client), _fresh(client)
    phone_csrf = login(phone, "rob")
    login(laptop, "rob")
    own = phone.get("/api/v1/sessions").json()
    assert len(own) == 2 and sum(s["current"] for s in own) == 1
    laptop_id = next(s["id"] for s in own if not s["current"])
    response = phone.delete(f"/api/v1/sessions/{laptop_id}", headers=_h(phone_csrf))
    assert response.status_code == 200
    assert laptop.get("/api/v1/me").status_code == 401
    # rob cannot end someone else's session
    admin = _fresh(client)
    admin_csrf = login(admin, "ada")
    admin_session = admin.get("/api/v1/me").json()["session_id"]
    assert (
        phone.delete(f"/api/v1/sessions/{admin_session}", headers=_h(phone_csrf)).status_code == 404
    )
    # the admin sees everyone's, and ends all of rob's after a suspected breach
    assert {s["user"] for s in admin.get("/api/v1/sessions?all=true").json()} == {"rob", "ada"}
    assert [s["user"] for s in admin.get("/api/v1/sessions?user=rob").json()] == ["rob"]
    revoked = admin.post("/api/v1/users/rob/sessions/revoke-all", headers=_h(admin_csrf))
    assert revoked.json() == {"user": "rob", "sessions_revoked": 1}
    assert phone.get("/api/v1/me").status_code == 401


# -- tokens and ingest keys -------------------------------------------------------------------


def test_api_token_is_shown_once_and_refused_after_revoke(client: TestClient) -> None:
    csrf = login(client, "ada")
    created = client.post(
        "/api/v1/tokens", json={"name": "grafana", "role": "viewer"}, headers=_h(csrf)
    ).json()
    token = created["token"]
    listed = client.get("/api/v1/tokens").json()
    assert listed[0]["name"] == "grafana" and "token" not in listed[0]
    api = _fresh(client, headers={"Authorization": f"Bearer {token}"})
    assert api.get("/api/v1/things").status_code == 200
    assert client.get("/api/v1/tokens").json()[0]["last_used_at"] is not None
    assert client.delete(f"/api/v1/tokens/{created['id']}", headers=_h(csrf)).status_code == 200
    refused = api.get("/api/v1/things")
    assert refused.status_code == 401
    assert refused.json()["detail"] == "unknown or revoked API token"


def test_ingestion_takes_its_own_keys_by_header_or_query(client: TestClient) -> None:
    csrf = login(client, "ada")
    alerts = client.post(
        "/api/v1/ingest-keys", json={"name": "alertmanager", "scope": "alerts"}, headers=_h(csrf)
    ).json()
    sender = _fresh(client)
    assert sender.post("/api/v1/alerts").status_code == 401
    by_header = sender.post("/api/v1/alerts", headers={"Authorization": f"Bearer {alerts['key']}"})
    assert by_header.json() == {"accepted": True, "source": "alertmanager"}
    assert sender.post("/api/v1/alerts", params={"key": alerts["key"]}).status_code == 200
    assert sender.post("/api/v1/errors", params={"key": alerts["key"]}).status_code == 403
    # a user's API token is not an ingest key, and an ingest key opens nothing else
    token = _token(client, "admin")
    assert (
        sender.post("/api/v1/alerts", headers={"Authorization": f"Bearer {token}"}).status_code
        == 401
    )
    wrong_door = sender.get("/api/v1/things", headers={"Authorization": f"Bearer {alerts['key']}"})
    assert wrong_door.status_code == 401
    assert client.delete(f"/api/v1/ingest-keys/{alerts['id']}", headers=_h(csrf)).status_code == 200
    assert sender.post("/api/v1/alerts", params={"key": alerts["key"]}).status_code == 401


# -- audit ------------------------------------------------------------------------------------


def test_audit_log_exports_as_csv(client: TestClient) -> None:
    login(client, "ada")
    response = client.get("/api/v1/audit", params={"format": "csv"})
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert rows[0]["action"] == "login.success" and rows[0]["ip"] == "testclient"
    jsonl = client.get("/api/v1/audit", params={"format": "jsonl"}).text.splitlines()
    assert len(jsonl) == len(rows)
    bad = client.get("/api/v1/audit", params={"since": "yesterday"})
    assert bad.status_code == 422 and bad.json()["field"] == "since"


def test_changes_through_protected_routers_are_audited(client: TestClient) -> None:
    csrf = login(client, "rob")
    client.post("/api/v1/things", headers=_h(csrf))
    client.post("/api/v1/things")  # refused (no CSRF): changed nothing, not audited as a change
    client.get("/api/v1/things")  # reads are not changes
    admin = _fresh(client)
    login(admin, "ada")
    entries = admin.get("/api/v1/audit", params={"action": "api.POST"}).json()
    assert [(e["actor"], e["target"], e["detail"]) for e in entries] == [
        ("rob", "/api/v1/things", {"status": 200})
    ]


def test_first_start_password_logs_in_as_admin(sqlite_store: Store, clock: FakeClock) -> None:
    with sqlite_store.begin() as conn:
        password = users.ensure_admin(conn, clock.now())
    assert password
    with TestClient(make_app(sqlite_store, clock)) as browser:
        login(browser, "admin", password)
        assert browser.get("/api/v1/me").json()["role"] == "admin"
