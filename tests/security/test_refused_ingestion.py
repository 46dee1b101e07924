"""Refused ingestion leaves a trace: a counter in /metrics and a rate-limited log line.

A Sentry SDK drops what is refused, Alertmanager retries quietly, a cron job's 404 lands in a
log nobody reads: without this a misconfigured sender is invisible on the server. Real app,
real store, real keys; the rate limit runs on the injected FakeClock, so nothing sleeps.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nachtwacht.auth import ingest_keys
from nachtwacht.clock import FakeClock
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.helpers import admin_token, settings_for
from tests.test_errors_fixtures import add_project, msg_event
from tests.test_nothing_lost import SITE, TOKEN

LOGGER = "nachtwacht.ingest"
UNKNOWN_DSN = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def served(sqlite_store: Store, clock: FakeClock) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    shop, blog = add_project(sqlite_store, "shop"), add_project(sqlite_store, "blog")
    with sqlite_store.begin() as conn:
        errors_key = ingest_keys.create_ingest_key(
            conn, "jobs", "errors", clock.now(), actor="tests"
        )
    app = create_app(settings_for(SITE, sqlite_store.url), sqlite_store, clock, start_engine=False)
    with TestClient(app) as client:
        yield client, {"shop": shop, "blog": blog, "errors_key": errors_key["key"]}


def store_event(client: TestClient, project_id: int, key: str) -> int:
    headers = {"X-Sentry-Auth": f"Sentry sentry_key={key}, sentry_version=7"}
    return client.post(
        f"/api/{project_id}/store/", json=msg_event("boom"), headers=headers
    ).status_code


def refused_counts(client: TestClient, store: Store) -> dict[tuple[str, str], float]:
    viewer = {"Authorization": f"Bearer {admin_token(store, role='viewer')}"}
    text = client.get("/metrics", headers=viewer).text
    found = re.findall(
        r'^nachtwacht_ingest_refused_total\{door="(\w+)",reason="(\w+)"\} ([0-9.]+)$', text, re.M
    )
    return {(door, reason): float(n) for door, reason, n in found}


def test_every_refused_door_is_counted_in_metrics_with_a_bounded_label_set(
    served: tuple[TestClient, dict[str, Any]], sqlite_store: Store
) -> None:
    client, ctx = served
    shop, blog = ctx["shop"], ctx["blog"]
    assert store_event(client, shop["id"], UNKNOWN_DSN) == 401
    assert store_event(client, shop["id"], blog["public_key"]) == 403  # the wrong project's key
    assert store_event(client, shop["id"], shop["public_key"]) == 200  # not counted
    nobody = {"Authorization": "Bearer nwk_not-a-key-anyone-has"}
    assert client.post("/api/v1/alerts", json={"title": "x"}, headers=nobody).status_code == 401
    assert client.post("/api/v1/alerts", json={"title": "x"}).status_code == 401
    wrong_scope = {"Authorization": f"Bearer {ctx['errors_key']}"}
    assert (
        client.post("/api/v1/alerts", json={"title": "x"}, headers=wrong_scope).status_code == 403
    )
    assert client.get("/ping/no-such-heartbeat-token").status_code == 404
    assert client.get(f"/ping/{TOKEN}").status_code == 200  # not counted
    counts = refused_counts(client, sqlite_store)
    assert {k: v for k, v in counts.items() if v} == {
        ("errors", "unknown_key"): 1,
        ("errors", "wrong_project"): 1,
        ("alerts", "unknown_key"): 1,
        ("alerts", "no_key"): 1,
        ("alerts", "wrong_scope"): 1,
        ("ping", "unknown_key"): 1,
    }
    # a thousand different bad keys add to a count, never a series: no key is a label
    series = len(counts)
    for n in range(50):
        store_event(client, shop["id"], f"{n:032x}")
        client.get(f"/ping/unknown-token-{n:04d}")
    counts = refused_counts(client, sqlite_store)
    assert len(counts) == series
    assert counts[("errors", "unknown_key")] == 51 and counts[("ping", "unknown_key")] == 51


def test_refusals_are_logged_at_most_once_a_minute_per_door_and_reason_with_a_key_prefix(
    served: tuple[TestClient, dict[str, Any]],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, ctx = served
    caplog.set_level(logging.WARNING, logger=LOGGER)
    token = "typo-in-the-cron-line"

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == LOGGER]

    for _ in range(5):
        assert client.get(f"/ping/{token}").status_code == 404
    assert store_event(client, ctx["shop"]["id"], ctx["blog"]["public_key"]) == 403
    first = lines()
    # the first of each door and reason at once; the other four pings wait for the next line
    assert len(first) == 2
    assert "1 ping request(s) since start: unknown key" in first[0]
    assert "1 errors request(s) since start: wrong project" in first[1]
    clock.advance(59)
    client.get(f"/ping/{token}")
    assert len(lines()) == 2  # still inside the minute
    clock.advance(1)
    client.get(f"/ping/{token}")
    assert len(lines()) == 3
    last = lines()[-1]
    assert "6 ping request(s) since 2027-01-15T08:00:00Z: unknown key" in last
    # where it came from and enough of the token to find the sender; never the token itself
    assert "from testclient" in last and "key typo-…" in last
    assert token not in "\n".join(lines())
    assert ctx["blog"]["public_key"] not in "\n".join(lines())
    assert f"key {ctx['blog']['public_key'][:6]}…" in first[1]


def test_a_key_in_the_log_cannot_forge_a_line(
    served: tuple[TestClient, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = served
    caplog.set_level(logging.WARNING, logger=LOGGER)
    forged = "nwk_ab\nc\rd" + "x" * 40
    client.post("/api/v1/alerts", json={"title": "x"}, params={"key": forged})
    message = next(r.getMessage() for r in caplog.records if r.name == LOGGER)
    assert "\n" not in message and "\r" not in message
    assert "key nwk_ab?c?d…" in message
