"""The ingestion endpoints over real HTTP (TestClient on the real app): Sentry envelope and
store, compression, auth, limits, overload, the JSON endpoint; refused requests store nothing."""

from __future__ import annotations

import gzip
import uuid
import zlib
from pathlib import Path

import brotli
import orjson
import pytest

from nachtwacht.clock import FakeClock
from nachtwacht.errors import issues
from nachtwacht.errors.envelope import IngestError, decompress, parse_envelope
from nachtwacht.store.db import Store
from tests.test_errors_fixtures import (
    Server,
    add_project,
    envelope,
    events,
    exc_event,
    frame,
    msg_event,
    server,
)

PLACE = [frame("place", "raise ValueError(msg)")]
ENVELOPE = "application/x-sentry-envelope"


@pytest.fixture
def srv(sqlite_store: Store, tmp_path: Path, clock: FakeClock) -> Server:
    with server(sqlite_store, tmp_path, clock) as s:
        yield s


def post(s: Server, body: bytes, headers: dict[str, str] | None = None, path: str = "") -> object:
    target = path or f"/api/{s.project['id']}/envelope/"
    return s.client.post(
        target, content=body, headers={"Content-Type": ENVELOPE, **(headers or {})}
    )


def test_gzip_brotli_deflate_and_plain_envelopes_are_stored(srv: Server) -> None:
    # errors/engine.py installed the spool handler and the retention module
    assert "error_event" in srv.runtime.drainer.handlers
    assert srv.runtime.engine.modules["error_retention"].interval == 600.0
    sent = []
    for encoding, pack in (
        ("gzip", gzip.compress),
        ("br", brotli.compress),
        ("deflate", zlib.compress),
        (None, lambda b: b),
    ):
        event = exc_event(value=f"order {len(sent)} is invalid", frames=PLACE)
        headers = srv.sentry() | ({"Content-Encoding": encoding} if encoding else {})
        r = post(srv, pack(envelope(event)), headers)
        assert r.status_code == 200, r.text
        assert r.json() == {"id": event["event_id"]}
        sent.append(event["event_id"])
    assert srv.drain() == 4
    with srv.store.connect() as conn:
        [issue], _ = issues.list_issues(conn)
    assert issue["count"] == 4 and events(srv.store) == 4


def test_auth_by_query_parameter_envelope_dsn_and_legacy_store(srv: Server) -> None:
    key, pid = srv.project["public_key"], srv.project["id"]
    by_query = msg_event("via query")
    r = post(
        srv, envelope(by_query), path=f"/api/{pid}/envelope/?sentry_key={key}&sentry_version=7"
    )
    assert r.status_code == 200, r.text
    by_dsn = msg_event("via dsn")
    r = post(srv, envelope(by_dsn, dsn=f"http://{key}@testserver/{pid}"))
    assert r.status_code == 200, r.text
    legacy = exc_event(frames=PLACE)
    del legacy["event_id"]  # an event without id gets one
    r = srv.client.post(
        f"/api/{pid}/store/", content=gzip.compress(orjson.dumps(legacy)),
        headers=srv.sentry() | {"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    new_id = r.json()["id"]
    assert len(new_id) == 32 and int(new_id, 16) >= 0
    # many events in one envelope, items without `length` (payload up to the newline)
    a, b = msg_event("one"), msg_event("two")
    r = post(srv, envelope(a, b, lengths=False), srv.sentry())
    assert r.status_code == 200 and r.json() == {"id": b["event_id"]}
    # an envelope with nothing but a session is accepted and stores nothing
    only_session = b'{}\n{"type":"session","length":2}\n{}\n'
    assert post(srv, only_session, srv.sentry()).json() == {}
    assert srv.drain() == 5
    with srv.store.connect() as conn:
        got = {e["event_id"] for e in _all_events(conn)}
    assert got == {by_query["event_id"], by_dsn["event_id"], new_id, a["event_id"], b["event_id"]}


def _all_events(conn) -> list[dict]:  # noqa: ANN001
    from sqlalchemy import select

    from nachtwacht.store import tables as t

    return [dict(r) for r in conn.execute(select(t.error_events)).mappings()]


def test_the_same_event_id_twice_is_stored_once(srv: Server) -> None:
    event = exc_event(frames=PLACE)
    for _ in range(2):
        assert post(srv, envelope(event), srv.sentry()).status_code == 200
    srv.drain()
    assert post(srv, envelope(event), srv.sentry()).status_code == 200  # after the first drain
    srv.drain()
    assert events(srv.store) == 1
    with srv.store.connect() as conn:
        [issue], _ = issues.list_issues(conn)
    assert issue["count"] == 1


def test_a_node_capture_message_envelope_is_titled_by_its_message(srv: Server) -> None:
    # what @sentry/node 8 sends for Sentry.captureMessage(...) with attachStacktrace: the
    # message, and a synthetic exception without a type carrying it and the stack trace
    def node_message(text: str) -> dict:
        return {
            "event_id": uuid.uuid4().hex,
            "level": "info",
            "message": text,
            "platform": "node",
            "sdk": {"name": "sentry.javascript.node", "version": "8.40.0"},
            "exception": {
                "values": [
                    {
                        "value": text,
                        "stacktrace": {
                            "frames": [
                                {
                                    "filename": "/srv/app/cache.js",
                                    "module": "cache",
                                    "function": "warm",
                                    "lineno": 12,
                                    "colno": 9,
                                    "in_app": True,
                                }
                            ]
                        },
                        "mechanism": {"type": "generic", "handled": True, "synthetic": True},
                    }
                ]
            },
        }

    for ms in (35, 1200):
        r = post(srv, envelope(node_message(f"cache warmed in {ms} ms")), srv.sentry())
        assert r.status_code == 200, r.text
    srv.drain()
    with srv.store.connect() as conn:
        [issue], _ = issues.list_issues(conn)
    assert issue["count"] == 2
    assert issue["title"] == "cache warmed in 35 ms"
    assert issue["exc_type"] is None


@pytest.mark.parametrize(
    ("body", "encoding", "needle"),
    [
        (b"", None, "header line is empty"),
        (b"not json\n", None, "not JSON"),
        (b'{}\n{"type":"event","length":500}\n{"x":1}\n', None, "cut short"),
        (b'{}\n{"length":2}\n{}\n', None, "no type"),
        (b'{}\n{"type":"event","length":-1}\n{}\n', None, "length is invalid"),
        (b'{}\n{"type":"event"}\n[1,2]\n', None, "not a JSON object"),
        (b'{}\n{"type":"event"}\n{"event_id":"xyz"}\n', None, "event_id"),
        (b'{}\n{"type":"event"}\n{broken\n', None, "not JSON"),
        (b"\x1f\x8b\x08garbage", "gzip", "not valid gzip"),
        # mtime=0: the same bytes, so the same test id, in every xdist worker
        (gzip.compress(b'{}\n{"type":"event"}\n{}\n', mtime=0)[:-6], "gzip", "gzip"),
        (b"garbage", "br", "brotli"),
        (b"garbage", "deflate", "deflate"),
    ],
)
def test_malformed_bodies_are_400_with_a_json_detail(
    srv: Server, body: bytes, encoding: str | None, needle: str
) -> None:
    headers = srv.sentry() | ({"Content-Encoding": encoding} if encoding else {})
    r = post(srv, body, headers)
    assert r.status_code == 400, r.text
    assert needle in r.json()["detail"]
    assert srv.runtime.spool.appended == 0
    assert srv.drain() == 0 and events(srv.store) == 0


def test_unknown_encoding_is_415(srv: Server) -> None:
    r = post(srv, envelope(msg_event("x")), srv.sentry() | {"Content-Encoding": "zstd"})
    assert r.status_code == 415 and r.json()["field"] == "content-encoding"


def test_wrong_keys_and_unknown_projects_store_nothing(srv: Server) -> None:
    other = add_project(srv.store, "crm")
    body = envelope(msg_event("hello"))
    pid = srv.project["id"]
    cases = [
        (f"/api/{pid}/envelope/", {}, 401),  # no key at all
        (f"/api/{pid}/envelope/", srv.sentry("0" * 32), 401),  # unknown key
        (f"/api/{pid}/envelope/", srv.sentry(other["public_key"]), 403),  # another project's
        (f"/api/{pid}/envelope/?sentry_key=nope", {}, 401),
        ("/api/9999/envelope/", srv.sentry(), 404),  # no such project
        ("/api/abc/envelope/", srv.sentry(), 404),
        (f"/api/{pid}/store/", {}, 401),
    ]
    for path, headers, status in cases:
        r = post(srv, body, headers, path=path)
        assert r.status_code == status, (path, r.text)
        assert r.headers["content-type"] == "application/json" and r.json()["detail"]
    # a DSN in the envelope naming a wrong key is refused the same way
    r = post(srv, envelope(msg_event("x"), dsn=f"http://{'f' * 32}@testserver/{pid}"))
    assert r.status_code == 401
    assert srv.runtime.spool.appended == 0
    srv.drain()
    assert events(srv.store) == 0


def test_oversized_events_and_bodies_are_413(
    sqlite_store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    extra = "errors:\n  max_event_bytes: 20000\n  max_envelope_bytes: 100000\n"
    with server(sqlite_store, tmp_path, clock, extra) as s:
        big = msg_event("x" * 25_000)
        assert post(s, envelope(big), s.sentry()).status_code == 413
        r = s.client.post(
            f"/api/{s.project['id']}/store/", content=orjson.dumps(big), headers=s.sentry()
        )
        assert r.status_code == 413 and "event" in r.json()["detail"]
        # a small compressed body that inflates past the cap: refused while inflating
        bomb = b"{}\n" + b" " * 5_000_000
        for encoding, pack in (("gzip", gzip.compress), ("br", brotli.compress)):
            packed = pack(bomb)
            assert len(packed) < 100_000
            r = post(s, packed, s.sentry() | {"Content-Encoding": encoding})
            assert r.status_code == 413, r.text
        r = post(s, b"{}\n" + b" " * 200_000, s.sentry())
        assert r.status_code == 413
        assert s.runtime.spool.appended == 0
        assert s.drain() == 0 and events(s.store) == 0


def test_overload_answers_429_with_retry_after(
    sqlite_store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    extra = "errors:\n  backlog_limit_bytes: 1048576\n  retry_after: 7\n"
    with server(sqlite_store, tmp_path, clock, extra) as s:
        filler = msg_event("f" * 300_000)
        accepted = 0
        for _ in range(5):  # the drainer is not running: the backlog grows
            filler["event_id"] = uuid.uuid4().hex
            r = post(s, envelope(filler), s.sentry())
            if r.status_code == 429:
                break
            assert r.status_code == 200
            accepted += 1
        assert accepted == 4  # 4 x 300 kB passes the 1 MiB limit
        assert r.status_code == 429 and r.headers["Retry-After"] == "7"
        # once drained, events are accepted again; nothing accepted was lost
        assert s.drain() == 4
        assert post(s, envelope(msg_event("again")), s.sentry()).status_code == 200


def test_a_full_spool_answers_429(sqlite_store: Store, tmp_path: Path, clock: FakeClock) -> None:
    extra = "errors:\n  max_event_bytes: 2000000\n"
    with server(sqlite_store, tmp_path, clock, extra, spool="  max_bytes: 1048576\n") as s:
        r = post(s, envelope(msg_event("g" * 1_100_000)), s.sentry())
        assert r.status_code == 429 and r.headers["Retry-After"] == "30"
        assert "full" in r.json()["detail"]
        assert s.drain() == 0
        assert post(s, envelope(msg_event("small")), s.sentry()).status_code == 200


def test_json_endpoint_takes_an_ingest_key_and_a_traceback(srv: Server) -> None:
    from nachtwacht.auth import ingest_keys

    with srv.store.begin() as conn:
        key = ingest_keys.create_ingest_key(conn, "cron", "errors", srv.clock.now(), actor="tests")[
            "key"
        ]
        alerts_key = ingest_keys.create_ingest_key(
            conn, "am", "alerts", srv.clock.now(), actor="tests"
        )["key"]
    trace = (
        "Traceback (most recent call last):\n"
        '  File "/srv/jobs/nightly.py", line 12, in run\n'
        "    sync(orders)\n"
        '  File "/srv/jobs/sync.py", line 40, in sync\n'
        "    raise ConnectionError(host)\n"
        "ConnectionError: erp.example:443 unreachable\n"
    )
    body = {
        "project": "shop",
        "exception": {
            "type": "ConnectionError",
            "value": "erp.example:443 unreachable",
            "stacktrace": trace,
        },
        "level": "error",
        "environment": "production",
        "release": "2.1.0",
        "timestamp": "2027-01-15T07:59:00Z",
        "tags": {"job": "nightly"},
        "event_id": str(uuid.UUID(int=7)),
    }
    auth_header = {"Authorization": f"Bearer {key}"}
    r = srv.client.post("/api/v1/errors/events", json=body, headers=auth_header)
    assert r.status_code == 200, r.text
    assert r.json() == {"id": f"{7:032x}"}
    r = srv.client.post(
        "/api/v1/errors/events",
        json={"project": "shop", "message": "disk at 91%"},
        params={"key": key},
    )
    assert r.status_code == 200
    # refusals: wrong scope, no key, unknown project, nothing to report, bad event id
    assert (
        srv.client.post(
            "/api/v1/errors/events", json=body, headers={"Authorization": f"Bearer {alerts_key}"}
        ).status_code
        == 403
    )
    assert srv.client.post("/api/v1/errors/events", json=body).status_code == 401
    r = srv.client.post(
        "/api/v1/errors/events", json={**body, "project": "nope"}, headers=auth_header
    )
    assert r.status_code == 422 and r.json()["field"] == "project"
    r = srv.client.post("/api/v1/errors/events", json={"project": "shop"}, headers=auth_header)
    assert r.status_code == 422
    r = srv.client.post(
        "/api/v1/errors/events", json={**body, "event_id": "zz"}, headers=auth_header
    )
    assert r.status_code == 422 and r.json()["field"] == "event_id"
    assert srv.drain() == 2
    with srv.store.connect() as conn:
        rows, _ = issues.list_issues(conn, sort="first_seen")
        detail = issues.detail(conn, next(i["id"] for i in rows if i["exc_type"]), srv.clock.now())
    assert detail["title"] == "ConnectionError: erp.example:443 unreachable"
    assert detail["culprit"] == "jobs.sync in sync"
    assert detail["category"] == "network"
    assert detail["first_seen"] == "2027-01-15T07:59:00Z"
    ev = detail["latest_event"]
    assert ev["tags"] == {"job": "nightly"} and ev["release"] == "2.1.0"
    assert [f["function"] for f in ev["exceptions"][0]["frames"]] == ["run", "sync"]


def test_envelope_parser_and_decompress_units() -> None:
    env = parse_envelope(envelope(msg_event("a"), msg_event("b")), 1 << 20)
    assert len(env.events) == 2 and env.skipped == 1
    # an attachment with a newline inside its `length` bytes is skipped whole
    att = b"line1\nline2"
    body = b'{}\n{"type":"attachment","length":%d}\n%s\n{"type":"event"}\n{"message":"m"}' % (
        len(att),
        att,
    )
    env = parse_envelope(body, 1 << 20)
    assert env.events == [b'{"message":"m"}'] and env.skipped == 1
    assert decompress(gzip.compress(b"a") + gzip.compress(b"b"), "gzip", 10) == b"ab"
    assert decompress(zlib.compress(b"x")[2:-4], "deflate", 10) == b"x"  # raw deflate
    with pytest.raises(IngestError) as exc:
        decompress(gzip.compress(b"x" * 11), "gzip", 10)
    assert exc.value.status == 413
