"""A tampered backup fails verify and restore; restore refuses a non-empty store without force;
a restore that fails halfway leaves the store exactly as it was. On every backend."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from nachtwacht.backup import service
from nachtwacht.backup.integrity import code_head
from nachtwacht.backup.manifest import (
    MANIFEST,
    BackupError,
    Manifest,
    read_manifest,
    table_file,
    write_manifest,
)
from nachtwacht.backup.restore import restore_backup, verify_backup
from nachtwacht.clock import FakeClock
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.test_backup_fill import assert_same_rows, fill, table_rows


def _data_file(info: service.BackupInfo) -> Path:
    assert info.manifest is not None
    rel = "nachtwacht.db" if info.manifest.kind == "sqlite" else table_file("users")
    return info.path / rel


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def backup(store: Store, tmp_path: Path, clock: FakeClock) -> service.BackupInfo:
    fill(store, rows=4)
    return service.create_backup(store, tmp_path / "backups", clock.now())


def _target(tmp_path: Path, name: str = "target.db") -> Store:
    target = Store(f"sqlite:///{tmp_path / name}")
    target.migrate()
    return target


def test_a_flipped_byte_fails_verify_and_restore(
    backup: service.BackupInfo, tmp_path: Path
) -> None:
    assert verify_backup(backup.path).ok
    data = _data_file(backup)
    _flip_byte(data, data.stat().st_size // 2)
    report = verify_backup(backup.path)
    assert not report.ok
    assert any("SHA-256 does not match" in p for p in report.problems), report.problems
    target = _target(tmp_path)
    with pytest.raises(BackupError, match="does not verify, nothing was restored"):
        restore_backup(backup.path, target)
    assert all(not rows for rows in table_rows(target).values())


def test_an_edited_manifest_fails_even_with_its_checksum_redone(
    backup: service.BackupInfo, tmp_path: Path
) -> None:
    path = backup.path / MANIFEST
    data = json.loads(path.read_text())
    data["tables"]["users"]["rows"] += 1
    path.write_text(json.dumps(data))
    report = verify_backup(backup.path)
    assert report.problems == [
        "manifest.json does not match manifest.sha256: the manifest was changed"
    ]
    # a careful forger also rewrites manifest.sha256: the recount still catches the edit
    manifest = Manifest.from_dict(data)
    write_manifest(backup.path, manifest)
    report = verify_backup(backup.path)
    assert report.problems == ["table users: 4 rows in the data, the manifest says 5"]
    target = _target(tmp_path)
    with pytest.raises(BackupError, match="the manifest says 5"):
        restore_backup(backup.path, target)
    assert all(not rows for rows in table_rows(target).values())


def test_a_missing_or_extra_file_fails_verify(backup: service.BackupInfo) -> None:
    (backup.path / "stray.txt").write_text("not part of the backup")
    assert verify_backup(backup.path).problems == ["stray.txt is not in the manifest"]
    (backup.path / "stray.txt").unlink()
    _data_file(backup).unlink()
    assert f"{_data_file(backup).relative_to(backup.path).as_posix()} is missing" in (
        verify_backup(backup.path).problems
    )


def test_restore_refuses_a_store_that_is_not_empty_unless_forced(
    store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    source = _target(tmp_path, "source.db")
    fill(source, rows=3)
    info = service.create_backup(source, tmp_path / "backups", clock.now())
    with store.begin() as conn:
        conn.execute(t.engine_meta.insert().values(key="only-row", value='"kept"', updated_at=1.0))
    before = table_rows(store)
    with pytest.raises(BackupError, match=r"not empty \(1 rows: engine_meta \(1\)\).*--force"):
        restore_backup(info.path, store)
    assert_same_rows(before, table_rows(store))
    report = restore_backup(info.path, store, force=True)
    assert report.deleted == 1
    assert_same_rows(table_rows(source), table_rows(store))


def test_a_restore_failing_halfway_leaves_the_store_untouched(
    store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    """A backup that verifies but holds a row the target refuses (a duplicate username, added
    after the fact with the manifest redone): the forced restore has already deleted the old rows
    and inserted the earlier tables when it fails, and all of that is rolled back."""
    fill(store, rows=5)
    before = table_rows(store)
    info = service.create_backup(store, tmp_path / "backups", clock.now(), logical=True)
    users = info.path / table_file("users")
    with gzip.open(users, "rt", encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    duplicate = json.loads(lines[0])
    duplicate[0] = 999  # a new id, the same username
    lines.append(json.dumps(duplicate))
    with gzip.open(users, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    manifest = read_manifest(info.path)
    manifest.tables["users"]["rows"] += 1
    write_manifest(info.path, manifest)
    assert verify_backup(info.path).ok
    # tables restored before `users` (in dependency order) are inserted when it fails
    assert [tb.name for tb in t.metadata.sorted_tables].index("users") > 0
    with pytest.raises(
        BackupError, match="restore failed at table users, the store was not changed"
    ):
        restore_backup(info.path, store, force=True)
    assert_same_rows(before, table_rows(store))


def test_a_backup_of_another_schema_version_is_refused(
    backup: service.BackupInfo, tmp_path: Path
) -> None:
    manifest = read_manifest(backup.path)
    manifest.schema_version = "0003"
    write_manifest(backup.path, manifest)
    if manifest.kind == "sqlite":
        # the copy itself says 0004: verify notices the manifest disagrees
        assert verify_backup(backup.path).problems == [
            f"nachtwacht.db is at schema {code_head()}, the manifest says 0003"
        ]
        return
    target = _target(tmp_path)
    with pytest.raises(
        BackupError, match=f"is at schema 0003, this Nachtwacht is at {code_head()}"
    ):
        restore_backup(backup.path, target)
    assert all(not rows for rows in table_rows(target).values())
