"""`check_store`: passes on a fresh store of each backend, fails on real damage."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from nachtwacht.backup.integrity import check_store, code_head
from nachtwacht.store.db import Store
from tests.test_backup_fill import backend, fill

EXPECTED_CHECKS = {
    "sqlite": [
        "schema version",
        "catalog",
        "row counts",
        "audit chain",
        "integrity_check",
        "foreign_key_check",
    ],
    "postgresql": ["schema version", "catalog", "row counts", "audit chain", "amcheck"],
    "mariadb": ["schema version", "catalog", "row counts", "audit chain", "check table"],
}


def test_a_fresh_store_passes_every_check(store: Store) -> None:
    fill(store, rows=3)
    report = check_store(store)
    assert report.ok, report.as_dict()
    assert [c.name for c in report.checks] == EXPECTED_CHECKS[backend(store)]
    assert report.schema_version == code_head()
    assert report.row_counts["users"] == 3 and report.row_counts["results"] > 1000
    assert report.summary().startswith(f"ok ({backend(store)}, schema {code_head()}")


def test_an_older_schema_version_fails(store: Store) -> None:
    with store.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0003'"))
    report = check_store(store)
    assert not report.ok
    assert [c.name for c in report.failed] == ["schema version"]
    assert f"the store is at schema 0003, this Nachtwacht expects {code_head()}" in (
        report.summary()
    )


def test_a_missing_index_fails_the_catalog_check(store: Store) -> None:
    drop = {
        "mysql": "DROP INDEX ix_results_minute ON results",
    }.get(store.dialect, "DROP INDEX ix_results_minute")
    with store.begin() as conn:
        conn.execute(text(drop))
    report = check_store(store)
    assert [c.name for c in report.failed] == ["catalog"]
    assert report.failed[0].detail == "index ix_results_minute is missing"


def test_amcheck_runs_when_the_extension_is_installed(store: Store) -> None:
    if store.dialect != "postgresql":
        assert "amcheck" not in [c.name for c in check_store(store).checks]
        return
    with store.begin() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS amcheck"))
    fill(store, rows=3)
    amcheck = next(c for c in check_store(store).checks if c.name == "amcheck")
    assert amcheck.status == "ok"
    assert "B-tree indexes consistent" in amcheck.detail


def test_a_corrupted_sqlite_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "nachtwacht.db"
    store = Store(f"sqlite:///{path}")
    store.migrate()
    fill(store, rows=3)
    with store.begin() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.dispose()
    # overwrite the pages in the middle of the file (table and index b-trees) with noise
    data = bytearray(path.read_bytes())
    page = 4096
    middle = (len(data) // page // 2) * page
    for offset in range(middle, min(middle + 4 * page, len(data))):
        data[offset] = (offset * 7919) % 256
    path.write_bytes(bytes(data))
    report = check_store(Store(f"sqlite:///{path}"))
    assert not report.ok
    failed = {c.name: c.detail for c in report.failed}
    assert failed, report.as_dict()
    assert any(
        "malformed" in d or "integrity_check" in d or "corrupt" in d for d in failed.values()
    )


def test_a_file_that_is_not_a_database_fails(tmp_path: Path) -> None:
    path = tmp_path / "nachtwacht.db"
    path.write_bytes(b"this is not a SQLite database" * 200)
    report = check_store(Store(f"sqlite:///{path}"))
    assert not report.ok
    assert [c.name for c in report.failed] == ["connect"]
    assert "not a database" in report.failed[0].detail


def test_a_missing_sqlite_file_fails_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "typo" / "nachtwacht.db"
    report = check_store(Store(f"sqlite:///{path}"))
    assert [(c.name, c.detail) for c in report.failed] == [("connect", f"{path} does not exist")]
    assert not path.exists()
