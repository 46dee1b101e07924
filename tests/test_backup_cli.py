"""`nachtwacht backup ...`, `store check` and `export`: the whole CLI app in-process (typer's
CliRunner, stdout and stderr apart), and the installed command as a real subprocess for errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nachtwacht.backup.manifest import table_file
from nachtwacht.cli.main import app
from nachtwacht.store import auditchain
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.test_backup_fill import assert_same_rows, empty_store, fill, table_rows

BIN = str(Path(sys.executable).parent / "nachtwacht")
runner = CliRunner()


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def _run(cwd: Path, *args: str) -> Result:
    """The CLI in this process, run from `cwd` (where nachtwacht.yaml is)."""
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = runner.invoke(app, list(args))
    finally:
        os.chdir(old)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return Result(result.exit_code, result.stdout, result.stderr)


def _subprocess(cwd: Path, *args: str) -> Result:
    done = subprocess.run([BIN, *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    return Result(done.returncode, done.stdout, done.stderr)


def _one_error_line(result: Result, code: int, expected: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A config with a SQLite store holding rows in every table; the CLI runs in this dir."""
    (tmp_path / "nachtwacht.yaml").write_text(
        f"site: cli-test\nstore:\n  url: sqlite:///{tmp_path / 'data' / 'nachtwacht.db'}\n"
    )
    store = Store(f"sqlite:///{tmp_path / 'data' / 'nachtwacht.db'}")
    store.migrate()
    fill(store, rows=3)
    store.dispose()
    return tmp_path


def test_create_list_verify_restore(site: Path) -> None:
    created = _run(site, "backup", "create", "--json")
    assert created.returncode == 0, created.stderr
    info = json.loads(created.stdout)
    assert info["kind"] == "sqlite" and info["source_backend"] == "sqlite"
    assert Path(info["path"]).parent == site / "data" / "backups"

    listed = _run(site, "backup", "list")
    assert listed.returncode == 0
    assert info["name"] in listed.stdout and "sqlite" in listed.stdout

    verified = _run(site, "backup", "verify", info["name"])
    assert verified.returncode == 0, verified.stderr
    tables = len(t.metadata.tables)
    assert verified.stdout.startswith(
        f"ok: {info['name']}: the SHA-256 of 1 file(s) and the {info['rows']} rows in {tables} "
    )

    # into a new store: the migration path, by URL
    target_url = f"sqlite:///{site / 'restored.db'}"
    restored = _run(site, "backup", "restore", info["name"], "--to", target_url)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.startswith(f"restored {info['name']} into {target_url}: ")
    source, target = Store(f"sqlite:///{site / 'data' / 'nachtwacht.db'}"), Store(target_url)
    expected, actual = table_rows(source), table_rows(target)
    # the restore is audited in the store it changed
    (entry,) = [r for r in actual.pop("audit_log") if r[3] == "backup.restore"]
    assert entry[4] == info["name"]
    expected.pop("audit_log")
    # ... chained after the restored entries: the head moved on, and the chain still holds
    expected.pop("audit_head"), actual.pop("audit_head")
    assert_same_rows(expected, actual)
    with target.connect() as conn:
        assert auditchain.verify(conn).entries == 4

    # the same store again: refused without --force, one line, exit 1
    again = _run(site, "backup", "restore", info["name"], "--to", target_url)
    _one_error_line(again, 1, "the store is not empty")
    forced = _run(site, "backup", "restore", info["name"], "--to", target_url, "--force")
    assert forced.returncode == 0 and "(replaced " in forced.stdout


def test_restore_into_postgresql_by_url(site: Path) -> None:
    info = json.loads(_run(site, "backup", "create", "--json", "--logical").stdout)
    assert info["kind"] == "logical"
    gen = empty_store("postgresql", site)
    pg = next(gen)
    try:
        result = _run(site, "backup", "restore", info["name"], "--to", pg.url, "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["rows"] == info["rows"]
        with pg.connect() as conn:
            assert conn.execute(t.users.select()).all()
    finally:
        for _ in gen:
            pass


def test_a_tampered_backup_fails_verify_and_restore(site: Path) -> None:
    info = json.loads(_run(site, "backup", "create", "--json", "--logical").stdout)
    path = Path(info["path"]) / table_file("incidents")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    verified = _run(site, "backup", "verify", info["name"])
    _one_error_line(verified, 1, "tables/incidents.jsonl.gz: SHA-256 does not match")
    restored = _run(site, "backup", "restore", info["name"], "--to", f"sqlite:///{site / 'x.db'}")
    _one_error_line(restored, 1, "does not verify, nothing was restored")


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["backup", "verify", "nachtwacht-20990101T000000Z"], 2, "no backup 'nachtwacht-2099"),
        (["backup", "restore", "last-tuesday"], 2, "no backup 'last-tuesday': give a name"),
        (["backup", "verify", "/nonexistent/dir"], 2, "no backup '/nonexistent/dir'"),
        (["export", "--output", "x.json", "--since", "yesterday"], 2, "--since: 'yesterday'"),
        (["export", "--output", "x.json", "--since", "1d", "--until", "2d"], 2, "before --until"),
    ],
)
def test_bad_input_is_one_error_line(site: Path, args: list[str], code: int, expected: str) -> None:
    _one_error_line(_run(site, *args), code, expected)


def test_the_installed_command_says_a_backup_is_missing_in_one_line(site: Path) -> None:
    result = _subprocess(site, "backup", "restore", "nachtwacht-20990101T000000Z", "--force")
    _one_error_line(result, 2, f"no backup 'nachtwacht-20990101T000000Z' in {site / 'data'}")


def test_store_check_passes_then_fails_on_a_damaged_file(site: Path) -> None:
    ok = _run(site, "store", "check")
    assert ok.returncode == 0, ok.stderr
    assert "OK      integrity_check: PRAGMA integrity_check: ok" in ok.stdout
    assert "ok: ok (sqlite, schema" in ok.stdout
    as_json = json.loads(_run(site, "store", "check", "--json").stdout)
    assert as_json["ok"] is True and as_json["backend"] == "sqlite"

    db = site / "data" / "nachtwacht.db"
    for extra in ("-wal", "-shm"):
        (site / "data" / f"nachtwacht.db{extra}").unlink(missing_ok=True)
    db.write_bytes(b"\x00" * 100 + db.read_bytes()[100:])
    bad = _run(site, "store", "check")
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: store check failed: ")


def test_export_writes_the_file(site: Path) -> None:
    result = _run(site, "export", "--output", "out/export.json", "--since", "1970-01-01T00:00:00Z")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("wrote out/export.json: 3 probes, ")
    doc = json.loads((site / "out" / "export.json").read_text(encoding="utf-8"))
    assert doc["format"] == "nachtwacht-export" and doc["site"] == "cli-test"
    assert doc["counts"]["probes"] == 3
