"""The audit log's hash chain: intact, edited, deleted, concurrent appends, migration, backup."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from nachtwacht.auth.audit import audit
from nachtwacht.backup.integrity import check_store
from nachtwacht.backup.restore import restore_backup
from nachtwacht.backup.service import create_backup
from nachtwacht.clock import FakeClock
from nachtwacht.store import auditchain
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.store.migrate import upgrade
from tests.conftest import _pg_store, migrated_store
from tests.store_templates import Templates


def write(store: Store, clock: FakeClock, n: int, action: str = "user.add") -> None:
    for i in range(n):
        clock.advance(1.5)
        with store.begin() as conn:
            audit(
                conn,
                "rita",
                action,
                f"user{i}",
                {"role": "viewer", "i": i},
                "10.0.0.9",
                clock.now(),
            )


def rows(store: Store) -> list[dict[str, object]]:
    with store.connect() as conn:
        a = t.audit_log.c
        return [dict(r) for r in conn.execute(select(t.audit_log).order_by(a.seq)).mappings()]


def chain(store: Store) -> auditchain.ChainReport:
    report = check_store(store)
    names = [c.name for c in report.checks]
    assert "audit chain" in names
    assert report.audit_chain is not None
    assert report.ok == report.audit_chain.ok
    return report.audit_chain


def test_an_intact_chain_verifies_with_its_count_and_head(store: Store, clock: FakeClock) -> None:
    assert chain(store).describe() == "no entries yet"
    write(store, clock, 5)
    entries = rows(store)
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0]["prev_hash"] == auditchain.GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(entries, entries[1:], strict=False))
    report = chain(store)
    assert report.ok and report.entries == 5
    assert report.head is not None and report.head.hash == entries[-1]["hash"]
    assert report.describe() == f"5 entries intact, head seq 5 hash {entries[-1]['hash']}"


def test_an_entry_edited_by_sql_is_named(store: Store, clock: FakeClock) -> None:
    write(store, clock, 5)
    victim = rows(store)[2]
    with store.begin() as conn:
        conn.execute(
            text("UPDATE audit_log SET detail_json = :d WHERE id = :id"),
            {"d": '{"role": "admin"}', "id": victim["id"]},
        )
    report = chain(store)
    assert not report.ok and report.broken is not None
    assert (report.broken.id, report.broken.seq, report.broken.action) == (
        victim["id"],
        3,
        "user.add",
    )
    assert "edited after it was written" in report.broken.reason
    assert report.entries == 2


def test_an_entry_deleted_in_the_middle_is_named(store: Store, clock: FakeClock) -> None:
    write(store, clock, 5)
    entries = rows(store)
    with store.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": entries[1]["id"]})
    report = chain(store)
    assert report.broken is not None
    assert report.broken.id == entries[2]["id"]  # the first entry whose link is broken
    assert "the entries before it (seq 2) are missing: deleted" in report.broken.reason


def test_a_recomputed_hash_breaks_the_next_link(store: Store, clock: FakeClock) -> None:
    """Someone who edits an entry and fixes its own hash still breaks the next entry's link."""
    write(store, clock, 3)
    first, second, _ = rows(store)
    edited = {**first, "actor": "mallory"}
    digest = auditchain.entry_hash(1, edited, auditchain.GENESIS)
    with store.begin() as conn:
        conn.execute(
            text("UPDATE audit_log SET actor = 'mallory', hash = :h WHERE id = :id"),
            {"h": digest, "id": first["id"]},
        )
    report = chain(store)
    assert report.broken is not None and report.broken.id == second["id"]
    assert "prev_hash is not the hash of the entry before it" in report.broken.reason


def test_deleting_the_newest_entries_is_found_by_the_head(store: Store, clock: FakeClock) -> None:
    write(store, clock, 4)
    with store.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq >= 3"))
    report = chain(store)
    assert report.broken is not None and report.entries == 2
    assert "the head is seq 4 but the log ends at seq 2" in report.broken.reason


def test_store_check_cli_names_the_broken_entry_and_exits_1(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    from nachtwacht.cli.main import app

    write(sqlite_store, clock, 3)
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(f"store:\n  url: {sqlite_store.url}\n", encoding="utf-8")
    ok = CliRunner().invoke(app, ["store", "check", "--config", str(config)])
    assert ok.exit_code == 0, ok.output
    assert "audit chain: 3 entries intact, head seq 3" in ok.output
    victim = rows(sqlite_store)[1]
    with sqlite_store.begin() as conn:
        conn.execute(text("UPDATE audit_log SET action = 'user.remove' WHERE seq = 2"))
    broken = CliRunner().invoke(app, ["store", "check", "--config", str(config)])
    assert broken.exit_code == 1
    assert (
        f"audit chain: broken at entry id {victim['id']} (seq 2, 2027-01-15T08:00:03Z, "
        "user.remove): its content does not match its hash: edited after it was written"
    ) in broken.output


# -- several writers on PostgreSQL -----------------------------------------------------------


@pytest.fixture
def pg_store(tmp_path: Path, migrated_templates: Templates) -> Iterator[Store]:
    yield from migrated_store(migrated_templates, "postgresql", tmp_path)


def _waiting_on_a_lock(store: Store) -> bool:
    with store.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar()
        )


@pytest.mark.parametrize("entries_before", [0, 2])
def test_a_second_writer_waits_for_the_first_and_chains_after_it(
    pg_store: Store, clock: FakeClock, entries_before: int
) -> None:
    """Two transactions appending at once on PostgreSQL: the second blocks on the head (or, on
    a fresh store, on the head's first insert) until the first commits, then chains to it."""
    write(pg_store, clock, entries_before)
    done = threading.Event()
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with pg_store.begin() as conn:
                audit(conn, "bob", "token.create", "t2", None, None, clock.now())
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            done.set()

    with pg_store.begin() as conn:
        audit(conn, "rita", "user.add", "t1", None, None, clock.now())
        writer = threading.Thread(target=second)
        writer.start()
        for _ in range(2000):  # until PostgreSQL reports the second one waiting on a lock
            if _waiting_on_a_lock(pg_store) or done.is_set():
                break
        assert not done.is_set(), errors
        assert _waiting_on_a_lock(pg_store)
    writer.join(timeout=60)
    assert not errors
    entries = rows(pg_store)
    assert [(e["seq"], e["target"]) for e in entries[entries_before:]] == [
        (entries_before + 1, "t1"),
        (entries_before + 2, "t2"),
    ]
    assert entries[-1]["prev_hash"] == entries[-2]["hash"]
    assert chain(pg_store).entries == entries_before + 2


def test_many_threads_appending_at_once_leave_one_unbroken_chain(
    pg_store: Store, clock: FakeClock
) -> None:
    threads, each = 6, 15
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(each):
                with pg_store.begin() as conn:
                    audit(conn, f"w{n}", "login.failed", f"{n}/{i}", {"i": i}, None, clock.now())
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not errors
    report = chain(pg_store)
    assert report.ok, report.describe()
    assert report.entries == threads * each
    assert sorted(e["seq"] for e in rows(pg_store)) == list(range(1, threads * each + 1))


# -- the migration, backups ------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def unmigrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        store = Store(f"sqlite:///{tmp_path / 'old.db'}")
        yield store
        store.dispose()
    else:
        yield from _pg_store()


def test_the_migration_chains_the_entries_already_there(
    unmigrated: Store, clock: FakeClock
) -> None:
    store = unmigrated
    upgrade(store.engine, "0010")
    with store.begin() as conn:
        for i in range(5):
            conn.execute(
                text(
                    "INSERT INTO audit_log (ts, actor, action, target, detail_json, ip) "
                    "VALUES (:ts, 'rita', 'user.add', :target, :d, NULL)"
                ),
                {"ts": clock.now() + i, "target": f"u{i}", "d": f'{{"i": {i}}}'},
            )
    upgrade(store.engine)
    entries = rows(store)
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert [e["target"] for e in entries] == ["u0", "u1", "u2", "u3", "u4"]
    write(store, clock, 1)
    report = chain(store)
    assert report.ok and report.entries == 6


def test_a_restored_backup_still_verifies(
    store: Store, clock: FakeClock, tmp_path: Path, migrated_templates: Templates
) -> None:
    write(store, clock, 4)
    info = create_backup(store, tmp_path / "backups", clock.now())
    target_stores = migrated_store(migrated_templates, "sqlite", tmp_path / "target")
    target = next(target_stores)
    try:
        restore_backup(info.path, target)
        assert chain(target).entries == 4
        write(target, clock, 1)  # appends chain on after the restored head
        assert chain(target).entries == 5
    finally:
        for _ in target_stores:
            pass


def test_doctor_checks_the_chain(sqlite_store: Store, clock: FakeClock) -> None:
    from nachtwacht.watchdog.doctor import check_audit_chain

    write(sqlite_store, clock, 2)
    assert check_audit_chain(sqlite_store).level == "ok"
    with sqlite_store.begin() as conn:
        conn.execute(text("UPDATE audit_log SET ip = '192.0.2.1' WHERE seq = 1"))
    check = check_audit_chain(sqlite_store)
    assert check.level == "fail"
    assert check.message.startswith("broken at entry id ")
    assert "(seq 1, " in check.message and "edited after it was written" in check.message
