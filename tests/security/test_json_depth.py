"""Deep JSON is refused at every JSON door, and readers survive deep data stored before.

Alert labels nested 400 deep made `GET /api/v1/alerts` answer 500 for everyone, frame
variables 250 deep broke the error issue, and 255-1,024 levels at ingestion or at /login were
500s. Now JSON deeper than `server.max_json_depth` (32; error events
`errors.max_event_depth`, 64) is a 4xx before any parser sees it, and nothing is stored.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select, update

from nachtwacht.auth import ingest_keys
from nachtwacht.clock import FakeClock
from nachtwacht.config import limits
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.helpers import admin_token
from tests.test_errors_fixtures import Server, exc_event, frame, server


def deep(levels: int) -> bytes:
    """A JSON value `levels` containers deep."""
    return b'{"a":' * levels + b"1" + b"}" * levels


def body(template: str, levels: int) -> bytes:
    return template.replace("DEEP", deep(levels).decode()).encode()


@pytest.fixture
def srv(sqlite_store: Store, tmp_path: Path, clock: FakeClock) -> Iterator[Server]:
    with server(sqlite_store, tmp_path, clock) as s:
        yield s


def headers(srv: Server) -> dict[str, dict[str, str]]:
    with srv.store.begin() as conn:
        key = ingest_keys.create_ingest_key(conn, "src", "all", srv.clock.now(), actor="t")["key"]
    token = admin_token(srv.store, srv.clock.now())
    return {
        "none": {},
        "json": {"Content-Type": "application/json"},
        "key": {"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        "token": {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        "sentry": srv.sentry(),
    }


def stored(srv: Server) -> dict[str, int]:
    with srv.store.connect() as conn:
        counts = {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (t.alerts, t.incidents, t.error_events)
        }
    return counts | {"spooled": srv.runtime.spool.appended}


# (path, body with DEEP where the deep value goes, which credentials, how deep DEEP may be:
# the door's limit less the containers around it)
DOORS = [
    ("/login", '{"username": DEEP, "password": "x"}', "none", limits.JSON_DEPTH - 1),
    ("/login", '{"username": DEEP, "password": "x"}', "json", limits.JSON_DEPTH - 1),
    ("/api/v1/alerts", '{"title": "disk", "labels": {"x": DEEP}}', "key", limits.JSON_DEPTH - 2),
    (
        "/api/v1/alerts/alertmanager",
        '{"alerts": [{"status": "firing", "labels": {"alertname": "A"}}], "groupLabels": DEEP}',
        "key",
        limits.JSON_DEPTH - 1,
    ),
    (
        "/api/v1/errors/events",
        '{"project": "shop", "message": "m", "extra": {"x": DEEP}}',
        "key",
        limits.EVENT_DEPTH - 2,
    ),
    (
        "/api/v1/incidents",
        '{"title": "db down", "severity": 3, "impact": DEEP}',
        "token",
        limits.JSON_DEPTH - 1,
    ),
]


def sentry_doors(srv: Server, levels: int) -> list[tuple[str, bytes]]:
    """An event whose first frame has a variable `levels` deep (the frame's vars are 8 down)."""
    event = orjson.dumps(exc_event(frames=[frame("f", "g()")]))
    event = event.replace(b'"in_app":true', b'"in_app":true,"vars":{"v":' + deep(levels) + b"}")
    item = orjson.dumps({"type": "event", "length": len(event)})
    pid = srv.project["id"]
    return [
        (f"/api/{pid}/envelope/", b"{}\n" + item + b"\n" + event),
        (f"/api/{pid}/store/", event),
    ]


def test_deep_json_is_refused_at_every_json_door_and_nothing_is_stored(srv: Server) -> None:
    given = headers(srv)
    before = stored(srv)
    for path, template, who, _ in DOORS:
        answer = srv.client.post(path, content=body(template, 1000), headers=given[who])
        assert answer.status_code == 422, (path, who, answer.status_code, answer.text[:200])
        assert "nested deeper than" in answer.json()["detail"]
        assert answer.json()["field"] == "body"
    # Sentry's endpoints: 400, as for any event they cannot take (an SDK drops it)
    for path, content in sentry_doors(srv, 1000):
        answer = srv.client.post(path, content=content, headers=given["sentry"])
        assert answer.status_code == 400, (path, answer.text[:200])
        assert "nested deeper than 64 levels" in answer.json()["detail"]
    srv.drain()
    assert stored(srv) == before


def test_json_one_level_over_the_limit_is_refused_and_at_the_limit_taken(srv: Server) -> None:
    given = headers(srv)
    for path, template, who, inner in DOORS:
        over = srv.client.post(path, content=body(template, inner + 1), headers=given[who])
        assert over.status_code == 422, (path, over.text[:200])
        at = srv.client.post(path, content=body(template, inner), headers=given[who])
        assert at.status_code != 422 or "deeper" not in at.text, (path, at.text[:200])
    for path, content in sentry_doors(srv, limits.EVENT_DEPTH):  # already over: frame is 8 down
        assert srv.client.post(path, content=content, headers=given["sentry"]).status_code == 400
    for path, content in sentry_doors(srv, limits.EVENT_DEPTH - 9):
        answer = srv.client.post(path, content=content, headers=given["sentry"])
        assert answer.status_code == 200, answer.text


def true_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(true_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(true_depth, value), default=0)
    return 0


def test_depth_is_measured_on_containers_not_on_brackets_in_strings() -> None:
    tricky = ["[", "]", "{", "}", '"', "\\", "a", " ", '\\"']
    rnd = random.Random(12)

    def value(level: int) -> Any:
        roll = rnd.random()
        if level > 45 or roll < 0.35:
            return "".join(rnd.choice(tricky) for _ in range(rnd.randint(0, 6)))
        if roll < 0.45:  # a chain: the deep cases
            inner = value(level + 1)
            for _ in range(rnd.randint(1, 30)):
                inner = [inner] if rnd.random() < 0.5 else {rnd.choice(tricky): inner}
            return inner
        if roll < 0.7:
            return [value(level + 1) for _ in range(rnd.randint(0, 2))]
        return {str(rnd.random()) + rnd.choice(tricky): value(level + 1) for _ in range(2)}

    for _ in range(500):
        v = value(0)
        raw = json.dumps(v).encode()
        for limit in (1, 4, 8, 32):
            assert limits.too_deep(raw, limit) == (true_depth(v) > limit), raw[:200]


def test_deep_data_stored_before_the_door_does_not_break_its_readers(srv: Server) -> None:
    token = {"Authorization": f"Bearer {admin_token(srv.store, srv.clock.now())}"}
    given = headers(srv)
    answer = srv.client.post(
        "/api/v1/alerts", json={"title": "disk", "labels": {"x": 1}}, headers=given["key"]
    )
    assert answer.status_code == 200
    answer = srv.client.post(sentry_doors(srv, 1)[0][0], content=sentry_doors(srv, 1)[0][1],
                             headers=given["sentry"])  # fmt: skip
    assert answer.status_code == 200
    assert srv.drain() == 1
    # as a store written before this version could hold them
    labels = json.loads(deep(400))
    vars_ = json.loads(deep(250))
    with srv.store.begin() as conn:
        conn.execute(update(t.alerts).values(labels_json=json.dumps({"x": labels})))
        row = conn.execute(select(t.error_events)).mappings().one()
        data = orjson.loads(row["data_json"])
        data["exception"]["values"][0]["stacktrace"]["frames"][0]["vars"] = {"v": vars_}
        data["user"] = {"id": vars_}
        # json, not orjson: orjson writes no more than 255 levels
        conn.execute(update(t.error_events).values(data_json=json.dumps(data)))
        issue = row["issue_id"]

    listed = srv.client.get("/api/v1/alerts", headers=token)
    assert listed.status_code == 200
    assert true_depth(listed.json()[0]["labels"]) <= limits.JSON_DEPTH
    shown = srv.client.get(f"/api/v1/errors/issues/{issue}", headers=token)
    assert shown.status_code == 200
    assert "…" in shown.text
    page = srv.client.get(f"/errors/{issue}", headers=token | {"Accept": "text/html"})
    assert page.status_code == 200
