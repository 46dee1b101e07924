"""The drainer's handler on every backend: grouping, dedupe, counts per hour, issue states,
trimming, retention, versioning, projects."""

from __future__ import annotations

import orjson
import pytest
from sqlalchemy import select

from nachtwacht.auth.audit import audit_log
from nachtwacht.errors import fingerprint, issues, projects, service
from nachtwacht.errors import records as rec
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.test_errors_fixtures import (
    add_project,
    count,
    events,
    exc_event,
    frame,
    msg_event,
    records,
)

NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC, on the hour
PLACE = [frame("checkout", "place(order)"), frame("place", "raise ValueError(msg)")]
REFUND = [frame("refund", "raise ValueError(msg)")]


def store_batch(store: Store, payloads: list[bytes], now: float = NOW) -> int:
    with store.begin() as conn:
        return service.store_events(conn, payloads, now)


def issue_rows(store: Store) -> list[dict]:
    with store.connect() as conn:
        rows, _ = issues.list_issues(conn, status=None, sort="count", limit=None)
    return rows


def test_a_batch_groups_dedupes_and_counts_per_hour(store: Store) -> None:
    pid = add_project(store)["id"]
    same = exc_event(value="order 1 is invalid", frames=PLACE, ts=NOW - 7200)
    batch = records(
        pid,
        NOW,
        exc_event(value="order 17 is invalid", frames=PLACE, ts=NOW - 30),
        exc_event(value="order 4242 is invalid", frames=PLACE, ts=NOW - 20),
        same,
        same,  # the same event twice in one batch
        exc_event(value="order 5 refunded twice", frames=REFUND, ts=NOW - 10),
        msg_event("cache warmed in 35 ms", timestamp=NOW - 5),
        msg_event("cache warmed in 12 ms", timestamp=NOW - 4),
    )
    assert store_batch(store, batch) == 6
    # the whole batch again (a replay after a crash) adds nothing
    assert store_batch(store, batch) == 0
    assert events(store) == 6
    rows = issue_rows(store)
    assert [(r["count"], r["status"]) for r in rows] == [
        (3, "unresolved"),
        (2, "unresolved"),
        (1, "unresolved"),
    ]
    place = rows[0]
    assert place["title"] == "ValueError: order 17 is invalid"
    assert place["culprit"] == "shop.orders in place"
    assert place["first_seen"] == "2027-01-15T06:00:00Z"
    assert place["last_seen"] == "2027-01-15T07:59:40Z"
    assert place["fingerprint_version"] == 1
    assert rows[1]["title"] == "cache warmed in 35 ms" and rows[1]["level"] == "info"
    with store.connect() as conn:
        hours = issues.hourly(conn, [place["id"]], NOW, 24)[place["id"]]
    # NOW is on the hour: the current hour is empty, the two before it hold 2 and 1
    assert hours[-1] == 0 and hours[-2] == 2 and hours[-3] == 1 and sum(hours) == 3


def test_later_batches_add_to_existing_issues(store: Store) -> None:
    pid = add_project(store)["id"]
    store_batch(store, records(pid, NOW, exc_event(frames=PLACE, ts=NOW - 100)))
    later = exc_event(value="order 9 is invalid", frames=PLACE, ts=NOW - 50)
    store_batch(store, records(pid, NOW, later, exc_event(frames=PLACE, ts=NOW - 200)))
    [issue] = issue_rows(store)
    assert issue["count"] == 3
    assert issue["last_event_id"] == later["event_id"]  # the newest, not the last received
    assert issue["first_seen"] == "2027-01-15T07:56:40Z"
    with store.connect() as conn:
        hours = issues.hourly(conn, [issue["id"]], NOW - 1, 1)[issue["id"]]
        detail = issues.detail(conn, issue["id"], NOW - 1)
    assert hours == [3]  # one row per (issue, hour), added to
    assert detail["latest_event"]["event_id"] == later["event_id"]
    assert detail["latest_event"]["exceptions"][0]["frames"][-1]["function"] == "place"
    assert detail["hours_24h"][-1] == 3 and sum(detail["days_14d"]) == 3


def test_resolved_issue_regresses_on_a_new_event_ignored_stays_ignored(store: Store) -> None:
    pid = add_project(store)["id"]
    store_batch(
        store, records(pid, NOW, exc_event(frames=PLACE, ts=NOW), exc_event(frames=REFUND, ts=NOW))
    )
    place, refund = sorted(issue_rows(store), key=lambda r: r["culprit"])
    with store.begin() as conn:
        issues.set_status(conn, place["id"], "resolve", "rita", NOW + 60)
        issues.set_status(conn, refund["id"], "ignore", "rita", NOW + 60)
    # an event from before the resolution, reported late, does not reopen it
    store_batch(store, records(pid, NOW + 100, exc_event(frames=PLACE, ts=NOW + 30)), NOW + 100)
    with store.connect() as conn:
        assert issues.get_issue(conn, place["id"])["status"] == "resolved"
    store_batch(
        store,
        records(
            pid,
            NOW + 200,
            exc_event(frames=PLACE, ts=NOW + 120),
            exc_event(frames=REFUND, ts=NOW + 120),
        ),
        NOW + 200,
    )
    with store.connect() as conn:
        p = issues.get_issue(conn, place["id"])
        r = issues.get_issue(conn, refund["id"])
        log = audit_log(conn, action="error_issue.")
    assert (p["status"], p["count"], p["regressed_at"]) == ("unresolved", 3, NOW + 120)
    assert p["resolved_by"] == "rita" and p["resolved_at"] == NOW + 60
    assert (r["status"], r["count"]) == ("ignored", 2)
    assert {(e["action"], e["target"], e["actor"]) for e in log} == {
        ("error_issue.resolve", f"error_issue:{place['id']}", "rita"),
        ("error_issue.ignore", f"error_issue:{refund['id']}", "rita"),
    }
    with store.begin() as conn:
        back = issues.set_status(conn, refund["id"], "unresolve", "rita", NOW + 300)
        assert back["status"] == "unresolved"
        with pytest.raises(issues.IssueError) as missing:
            issues.set_status(conn, 999_999, "resolve", "rita", NOW)
    assert missing.value.http_status == 404


def test_events_are_kept_per_project_and_listed_with_filters(store: Store) -> None:
    shop = add_project(store, "shop")["id"]
    crm = add_project(store, "crm")["id"]
    same = exc_event(frames=PLACE, ts=NOW)
    # the same event id in two projects is two events; same frames in two projects two issues
    store_batch(
        store,
        records(shop, NOW, same)
        + records(crm, NOW, same, msg_event("Timeout talking to 10.0.0.1")),
    )
    assert events(store) == 3
    with store.connect() as conn:
        rows, total = issues.list_issues(conn, status="all", project="crm")
        assert total == 2 and {r["project"] for r in rows} == {"crm"}
        rows, total = issues.list_issues(conn, status="all", text="TIMEOUT")
        assert total == 1 and rows[0]["category"] == "timeout"
        rows, total = issues.list_issues(conn, status="all", text="50%_")
        assert total == 0  # LIKE wildcards are escaped
        page, total = issues.list_issues(conn, status="all", limit=1, offset=1)
        assert total == 3 and len(page) == 1
        with pytest.raises(issues.IssueError):
            issues.list_issues(conn, status="open")
        with pytest.raises(issues.IssueError):
            issues.list_issues(conn, project="nope")
        listed = {
            p["name"]: (p["events"], p["issues"]) for p in projects.list_projects(conn, "http://h")
        }
    assert listed == {"shop": (1, 1), "crm": (2, 2)}


def test_an_event_without_id_gets_a_stable_one_and_bad_records_raise(store: Store) -> None:
    pid = add_project(store)["id"]
    event = exc_event(frames=PLACE)
    del event["event_id"]
    payload = orjson.dumps({"project_id": pid, "received_at": NOW, "event": event})
    assert store_batch(store, [payload]) == 1
    assert store_batch(store, [payload]) == 0  # the derived id deduplicates a replay
    with pytest.raises(ValueError):
        store_batch(store, [orjson.dumps({"project_id": "x", "event": []})])


def test_events_of_a_removed_project_are_dropped(store: Store) -> None:
    pid = add_project(store)["id"]
    store_batch(store, records(pid, NOW, exc_event(frames=PLACE)))
    with store.begin() as conn:
        gone = projects.remove_project(conn, "shop", NOW, actor="tests")
    assert gone["events"] == 1 and gone["issues"] == 1
    assert count(store, t.error_issues) == count(store, t.error_issue_hours) == 0
    assert store_batch(store, records(pid, NOW, exc_event(frames=PLACE))) == 0
    assert events(store) == 0


def test_large_events_are_trimmed_to_fit_every_backend(store: Store) -> None:
    pid = add_project(store)["id"]
    frames = [{**frame(f"f{i}", "x = compute()"), "vars": {"blob": "v" * 5000}} for i in range(40)]
    big = exc_event(
        frames=frames,
        breadcrumbs={"values": [{"message": "b" * 2000} for _ in range(200)]},
        extra={"payload": "p" * 300_000},
    )
    store_batch(store, records(pid, NOW, big))
    with store.connect() as conn:
        data = conn.execute(select(t.error_events.c.data_json)).scalar_one()
    assert len(data.encode()) <= service.STORED_LIMIT
    kept = orjson.loads(data)
    assert kept["_trimmed"] is True
    assert kept["exception"]["values"][0]["type"] == "ValueError"
    # the stack (innermost frames last) survives the trimming
    assert kept["exception"]["values"][0]["stacktrace"]["frames"][-1]["function"] == "f39"


def test_retention_deletes_old_events_in_chunks_and_keeps_issues(store: Store) -> None:
    pid = add_project(store)["id"]
    old = [exc_event(frames=PLACE, ts=NOW - 100 * 86400 + i) for i in range(2100)]
    new = [exc_event(frames=PLACE, ts=NOW - 3600)]
    store_batch(store, records(pid, NOW, *old, *new))
    removed = service.apply_retention(store, NOW, 90 * 86400.0, 400 * 86400.0)
    assert removed == 2100
    assert events(store) == 1
    [issue] = issue_rows(store)
    assert issue["count"] == 2101  # issues keep their history
    # hourly counts go once older than their own retention
    service.apply_retention(store, NOW, 90 * 86400.0, 30 * 86400.0)
    assert count(store, t.error_issue_hours) == 1


def test_a_new_fingerprint_version_never_regroups_existing_issues(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = add_project(store)["id"]
    store_batch(store, records(pid, NOW, exc_event(value="order 1 is invalid", frames=PLACE)))
    [before] = issue_rows(store)

    # version 2 groups by exception type alone: PLACE and REFUND would fall together
    def v2(event: dict) -> tuple[str, list[str]]:
        return "type", [event["exception"]["values"][-1]["type"]]

    monkeypatch.setitem(fingerprint.ALGORITHMS, 2, v2)
    monkeypatch.setattr(fingerprint, "FINGERPRINT_VERSION", 2)
    store_batch(
        store,
        records(
            pid,
            NOW,
            exc_event(value="order 2 is invalid", frames=PLACE),  # joins its v1 issue
            exc_event(value="x", frames=REFUND),  # never seen: a new v2 issue
            exc_event("ValueError", "y", [frame("other", "raise ValueError()")]),  # same v2 issue
        ),
    )
    rows = {r["id"]: r for r in issue_rows(store)}
    assert rows[before["id"]]["count"] == 2 and rows[before["id"]]["fingerprint_version"] == 1
    newer = [r for r in rows.values() if r["id"] != before["id"]]
    assert [(r["count"], r["fingerprint_version"]) for r in newer] == [(2, 2)]
    # later events of the old issue keep going there, though the v2 issue matches them too
    store_batch(store, records(pid, NOW, exc_event(value="order 3 is invalid", frames=PLACE)))
    rows = {r["id"]: r for r in issue_rows(store)}
    assert rows[before["id"]]["count"] == 3 and rows[newer[0]["id"]]["count"] == 2


def test_records_with_meta_skip_the_second_parse_and_store_the_same(store: Store) -> None:
    pid = add_project(store)["id"]
    a = exc_event(
        frames=PLACE,
        ts=NOW - 10,
        environment="prod",
        release="1.0",
        tags={"x": "1"},
        event_id="a" * 32,
    )
    b = {**a, "event_id": "b" * 32}
    fast = rec.build(pid, NOW, orjson.dumps(a), rec.event_meta(a, NOW))
    slow = rec.build(pid, NOW, orjson.dumps(b))
    assert orjson.loads(fast)["event"] == a  # still one JSON object of the documented shape
    [item] = rec.parse([fast], NOW)
    assert item.parsed is None and item.raw == orjson.dumps(a) and item.event_id == a["event_id"]
    # fingerprints of versions this build does not have: read the slow way
    meta = {**rec.event_meta(a, NOW), "fp": [[7, "0" * 64]]}
    [old] = rec.parse([rec.build(pid, NOW, orjson.dumps(a), meta)], NOW)
    assert old.parsed == a and old.meta["fp"] == rec.event_meta(a, NOW)["fp"]
    assert store_batch(store, [fast, slow]) == 2
    with store.connect() as conn:
        rows = [
            dict(r)
            for r in conn.execute(
                select(t.error_events).order_by(t.error_events.c.event_id)
            ).mappings()
        ]
    assert rows[0]["data_json"] == orjson.dumps(a).decode()
    same = ("issue_id", "ts", "received_at", "level", "environment", "release", "message")
    assert [rows[0][k] for k in same] == [rows[1][k] for k in same]
    assert rows[0]["environment"] == "prod" and rows[0]["ts"] == NOW - 10


def test_a_batch_larger_than_a_chunk_dedupes_and_groups_across_chunks(store: Store) -> None:
    pid = add_project(store)["id"]
    twice = exc_event(frames=PLACE, ts=NOW - 5)
    many = [exc_event(frames=PLACE, ts=NOW - 10) for _ in range(service.CHUNK + 99)]
    # the same event in the first and in the second chunk; one issue across both
    assert store_batch(store, records(pid, NOW, twice, *many, twice)) == service.CHUNK + 100
    [issue] = issue_rows(store)
    assert issue["count"] == service.CHUNK + 100 == events(store)
    assert issue["last_event_id"] == twice["event_id"]


def test_users_affected_counts_distinct_users_of_the_newest_events(store: Store) -> None:
    pid = add_project(store)["id"]
    users = [
        {"id": "7"},
        {"id": 7, "email": "ann@example.com"},  # the same user 7
        {"ip_address": "7"},  # an IP "7" is not the user id "7"
        {"username": "bob"},
        {"ip_address": "{{auto}}"},  # no one
        None,  # no user at all
    ]
    batch = records(
        pid,
        NOW,
        *(
            exc_event(frames=PLACE, ts=NOW - 60 + k, **({"user": u} if u else {}))
            for k, u in enumerate(users)
        ),
    )
    assert store_batch(store, batch) == 6
    [row] = issue_rows(store)
    with store.connect() as conn:
        assert issues.users_affected(conn, row["id"]) == 3
        # bounded: only the newest two events (no user, and "{{auto}}") are looked at
        assert issues.users_affected(conn, row["id"], scan=2) == 0
        assert issues.users_affected(conn, row["id"], scan=3) == 1
        assert issues.detail(conn, row["id"], NOW)["users_affected"] == 3
