"""Back up every backend while it is being written, restore into each other backend, compare.

The source is filled with rows in every table; a writer thread keeps committing a result and a
heartbeat ping (tagged w<n>, in one transaction each) while the backup runs. The restored store
must hold exactly the source's rows, value by value and type by type (floats exactly), minus
the writer's commits that came after the snapshot, which must be a clean prefix of them.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from nachtwacht.backup import dump, service
from nachtwacht.backup.restore import restore_backup, verify_backup
from nachtwacht.clock import FakeClock
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.test_backup_fill import (
    Writer,
    assert_same_rows,
    backend,
    empty_store,
    fill,
    row_for,
    table_rows,
)

BACKENDS = ("sqlite", "postgresql", "mariadb")
WRITTEN = ("results", "heartbeat_pings")


def _tags(rows: list[tuple[Any, ...]], table: str) -> set[str]:
    index = list(t.metadata.tables[table].columns.keys()).index(
        "message" if table == "results" else "body"
    )
    return {r[index] for r in rows if isinstance(r[index], str) and r[index].startswith("w")}


def _expected(
    source: dict[str, list[tuple[Any, ...]]], restored: dict[str, list[tuple[Any, ...]]]
) -> dict[str, list[tuple[Any, ...]]]:
    """The source's rows as of the snapshot: the written tables cut at the restored ids, after
    checking that what the snapshot holds of them is a prefix of the source (no gaps)."""
    expected = dict(source)
    for name in WRITTEN:
        ids = [r[0] for r in restored[name]]
        top = max(ids)
        expected[name] = [r for r in source[name] if r[0] <= top]
        assert ids == [r[0] for r in expected[name]], f"{name}: the snapshot has gaps"
    # the writer commits a result and a ping together: a consistent snapshot has both or neither
    assert _tags(restored["results"], "results") == _tags(
        restored["heartbeat_pings"], "heartbeat_pings"
    )
    return expected


def _new_rows_do_not_collide(store: Store) -> None:
    """Sequences (PostgreSQL) and AUTO_INCREMENT (MariaDB) were moved past the restored ids."""
    with store.begin() as conn:
        for table in t.metadata.sorted_tables:
            auto = table.autoincrement_column
            if auto is None:
                continue
            top = conn.execute(select(auto).order_by(auto.desc()).limit(1)).scalar()
            new_id = conn.execute(
                table.insert().values(row_for(table, 10_000))
            ).inserted_primary_key[0]
            assert new_id > top, f"{table.name}: new id {new_id} not after {top}"


def test_backup_while_writing_restores_into_every_other_backend(
    store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    fill(store)
    writer = Writer(store)
    writer.start()
    writer.wait_for(20)
    before = writer.committed
    info = service.create_backup(store, tmp_path / "backups", clock.now())
    during = writer.committed - before
    writer.wait_for(writer.committed + 5)  # and it goes on writing after the backup
    total = writer.finish()
    assert info.manifest is not None
    assert info.manifest.kind == ("sqlite" if backend(store) == "sqlite" else "logical")
    assert verify_backup(info.path).ok
    source = table_rows(store)
    snapshot_writes = len(_tags(source["results"], "results"))
    assert snapshot_writes == total

    for target_backend in BACKENDS:
        if target_backend == backend(store):
            continue
        gen = empty_store(target_backend, tmp_path)
        target = next(gen)
        try:
            report = restore_backup(info.path, target)
            restored = table_rows(target)
            assert_same_rows(_expected(source, restored), restored)
            in_backup = len(_tags(restored["results"], "results"))
            # the snapshot was taken while the writer ran: some commits before it, some after
            assert before <= in_backup < total, (before, in_backup, total, during)
            assert report.rows["results"] == len(restored["results"])
            _new_rows_do_not_collide(target)
        finally:
            for _ in gen:
                pass


def test_sqlite_to_postgresql_and_back_is_the_migration_path(
    sqlite_store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    fill(sqlite_store)
    original = table_rows(sqlite_store)
    first = service.create_backup(sqlite_store, tmp_path / "backups", clock.now())
    gen = empty_store("postgresql", tmp_path)
    pg = next(gen)
    try:
        restore_backup(first.path, pg)
        assert_same_rows(original, table_rows(pg))
        clock.advance(60)
        second = service.create_backup(pg, tmp_path / "backups", clock.now())
        assert second.manifest is not None and second.manifest.source_backend == "postgresql"
    finally:
        for _ in gen:
            pass
    back = Store(f"sqlite:///{tmp_path / 'back.db'}")
    restore_backup(second.path, back)
    assert_same_rows(original, table_rows(back))


def test_mariadb_to_postgresql(tmp_path: Path, clock: FakeClock) -> None:
    source_gen = empty_store("mariadb", tmp_path)
    source = next(source_gen)
    target_gen = empty_store("postgresql", tmp_path)
    try:
        target = next(target_gen)
        fill(source)
        info = service.create_backup(source, tmp_path / "backups", clock.now())
        restore_backup(info.path, target)
        assert_same_rows(table_rows(source), table_rows(target))
    finally:
        for gen in (target_gen, source_gen):
            for _ in gen:
                pass


def test_sqlite_backup_does_not_wait_for_an_open_write_transaction(
    sqlite_store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    """WAL: the online backup copies the last committed state while a writer holds its lock."""
    fill(sqlite_store, rows=2)
    committed = len(table_rows(sqlite_store)["results"])
    with sqlite_store.engine.connect() as writer:
        tx = writer.begin()
        writer.execute(t.results.insert().values(probe_id=9, ts=2e9, minute=1, status=2))
        done = threading.Event()
        infos: list[service.BackupInfo] = []

        def run() -> None:
            infos.append(service.create_backup(sqlite_store, tmp_path / "b", clock.now()))
            done.set()

        thread = threading.Thread(target=run)
        thread.start()
        assert done.wait(20), "the backup waited for the writer"
        tx.commit()
    thread.join()
    assert infos[0].manifest is not None
    assert infos[0].manifest.tables["results"]["rows"] == committed
    clock.advance(1)
    later = service.create_backup(sqlite_store, tmp_path / "b", clock.now())
    assert later.manifest is not None
    assert later.manifest.tables["results"]["rows"] == committed + 1


def test_a_logical_dump_is_one_snapshot_even_when_a_commit_lands_midway(
    store: Store, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row committed into an early and a late table while the dump is between them appears in
    neither: every table is read from the snapshot taken at the start."""
    fill(store, rows=2)
    tables = [tb.name for tb in t.metadata.sorted_tables]
    first, last = tables[0], tables[-1]
    real = dump._dump_table
    seen: list[str] = []

    def dump_then_commit(conn: Any, name: str, path: Path) -> int:
        rows = real(conn, name, path)
        seen.append(name)
        if name == first:
            with store.begin() as other:
                for table_name in (first, last):
                    table = t.metadata.tables[table_name]
                    other.execute(table.insert().values(row_for(table, 5000)))
        return rows

    monkeypatch.setattr(dump, "_dump_table", dump_then_commit)
    before = {k: len(v) for k, v in table_rows(store).items()}
    info = service.create_backup(store, tmp_path / "b", clock.now(), logical=True)
    assert seen == tables
    assert info.manifest is not None
    assert {k: v["rows"] for k, v in info.manifest.tables.items()} == before
    after = table_rows(store)
    assert len(after[first]) == before[first] + 1 and len(after[last]) == before[last] + 1
