"""Every /api/v1 list pages the same way: limit + offset in, X-Total-Count and Link out."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from nachtwacht.clock import FakeClock
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.helpers import admin_token, settings_for


@contextmanager
def _client(store: Store, clock: FakeClock) -> Iterator[TestClient]:
    settings = settings_for("site: test-site\nprobes: []\n", store.url)
    app = create_app(settings, store, clock, start_engine=False)
    token = admin_token(store, clock.now())
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


@pytest.fixture
def client(sqlite_store: Store, clock: FakeClock) -> Iterator[TestClient]:
    with _client(sqlite_store, clock) as c:
        yield c


def _declare(client: TestClient, n: int) -> list[int]:
    ids = []
    for i in range(n):
        r = client.post("/api/v1/incidents", json={"title": f"incident {i}", "severity": 3})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


def _walk(client: TestClient, url: str) -> list[list[dict]]:
    """Follow rel="next" links from `url` until there is none."""
    pages = []
    next_url: str | None = url
    while next_url is not None:
        r = client.get(next_url)
        assert r.status_code == 200, r.text
        pages.append(r.json())
        link = r.headers.get("link")
        next_url = link.split(">", 1)[0].lstrip("<") if link else None
        assert len(pages) < 10, "next links never end"
    return pages


def test_incident_pages_do_not_overlap_and_cover_everything(client: TestClient) -> None:
    ids = _declare(client, 7)
    first = client.get("/api/v1/incidents", params={"limit": 3})
    assert first.headers["x-total-count"] == "7"
    assert 'rel="next"' in first.headers["link"]
    assert "offset=3" in first.headers["link"] and "limit=3" in first.headers["link"]

    pages = _walk(client, "/api/v1/incidents?limit=3")
    assert [len(p) for p in pages] == [3, 3, 1]
    seen = [i["id"] for p in pages for i in p]
    assert seen == sorted(ids, reverse=True)  # newest first, each once


def test_limit_offset_and_count_run_in_sql_on_every_backend(store: Store, clock: FakeClock) -> None:
    with _client(store, clock) as client:
        ids = _declare(client, 5)
        r = client.get("/api/v1/incidents", params={"limit": 2, "offset": 1})
        assert [i["id"] for i in r.json()] == sorted(ids, reverse=True)[1:3]
        assert r.headers["x-total-count"] == "5" and "offset=3" in r.headers["link"]
        audit = client.get("/api/v1/audit", params={"limit": 1, "offset": 0})
        assert int(audit.headers["x-total-count"]) >= 1 and len(audit.json()) == 1


def test_last_page_has_a_total_but_no_next_link(client: TestClient) -> None:
    _declare(client, 4)
    r = client.get("/api/v1/incidents", params={"limit": 2, "offset": 2})
    assert [i["title"] for i in r.json()] == ["incident 1", "incident 0"]
    assert r.headers["x-total-count"] == "4"
    assert "link" not in r.headers
    beyond = client.get("/api/v1/incidents", params={"offset": 50})
    assert beyond.json() == [] and beyond.headers["x-total-count"] == "4"


def test_filters_count_only_matching_rows(client: TestClient) -> None:
    ids = _declare(client, 3)
    r = client.post(f"/api/v1/incidents/{ids[0]}/resolve", json={"message": "fixed"})
    assert r.status_code == 200, r.text
    assert client.get("/api/v1/incidents").headers["x-total-count"] == "2"
    assert client.get("/api/v1/incidents?status=all").headers["x-total-count"] == "3"


def test_tokens_and_audit_page_the_same_way(client: TestClient) -> None:
    for i in range(4):
        r = client.post("/api/v1/tokens", json={"name": f"ci-{i}", "role": "viewer"})
        assert r.status_code == 201, r.text
    # the admin token of the fixture plus four
    pages = _walk(client, "/api/v1/tokens?limit=2")
    assert [len(p) for p in pages] == [2, 2, 1]
    assert len({tok["id"] for p in pages for tok in p}) == 5
    assert client.get("/api/v1/tokens?limit=2").headers["x-total-count"] == "5"

    audit = client.get("/api/v1/audit", params={"limit": 2, "action": "token."})
    total = int(audit.headers["x-total-count"])
    assert total >= 5 and len(audit.json()) == 2 and 'rel="next"' in audit.headers["link"]
    # exports page too: the headers ride on the CSV download
    csv = client.get("/api/v1/audit", params={"limit": 2, "action": "token.", "format": "csv"})
    assert csv.headers["x-total-count"] == str(total)
    assert len(csv.text.strip().splitlines()) == 3  # header + 2 rows


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/incidents", {"limit": 0}, "limit"),
        ("/api/v1/incidents", {"limit": 1001}, "limit"),
        ("/api/v1/alerts", {"offset": -1}, "offset"),
        ("/api/v1/tokens", {"offset": "x"}, "offset"),
        ("/api/v1/outbox", {"limit": "many"}, "limit"),
        ("/api/v1/silences", {"offset": 10**12}, "offset"),
    ],
)
def test_bad_limit_or_offset_is_a_422_naming_the_field(
    client: TestClient, path: str, params: dict, field: str
) -> None:
    r = client.get(path, params=params)
    assert r.status_code == 422
    assert r.json()["field"] == field


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/alerts",
        "/api/v1/probes",
        "/api/v1/outbox",
        "/api/v1/maintenance",
        "/api/v1/silences",
        "/api/v1/users",
        "/api/v1/audit",
    ],
)
def test_every_list_reports_its_total(client: TestClient, path: str) -> None:
    r = client.get(path, params={"limit": 1})
    assert r.status_code == 200, r.text
    assert isinstance(r.json(), list)
    assert int(r.headers["x-total-count"]) >= len(r.json())
