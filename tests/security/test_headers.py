"""Every answer carries the security headers: pages, the ack link, API errors, static files."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from nachtwacht.clock import FakeClock
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.helpers import settings_for

SITE = "site: headers\nprobes: []\n"


@pytest.fixture
def client(sqlite_store: Store, clock: FakeClock) -> Iterator[TestClient]:
    app = create_app(settings_for(SITE, sqlite_store.url), sqlite_store, clock, start_engine=False)
    with TestClient(app) as c:
        yield c


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/login"),
        ("GET", "/ack/not-a-token"),
        ("POST", "/ack/not-a-token"),
        ("GET", "/api/v1/status"),  # 401 without a token
        ("GET", "/healthz"),
        ("GET", "/static/app.css"),
        ("GET", "/no/such/page"),
    ],
)
def test_every_answer_forbids_framing_sniffing_and_referrers(
    client: TestClient, method: str, path: str
) -> None:
    answer = client.request(method, path, follow_redirects=False)
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    # the login form keeps its own same-origin policy (its CSRF check reads the Referer)
    assert answer.headers["referrer-policy"] in ("no-referrer", "same-origin")
