"""The restore test: the newest backup restored into a scratch store and checked, as proof.

A backup that verifies (backup/restore.py) has the bytes its manifest promises; a restore test
shows the rows come back as a working store. The scratch store is a temporary SQLite file in
the data directory, whatever the backend the backup came from (a backup restores into any
backend, and the engine then needs no right to create databases on the server;
docs/decisions/0031). Checked:

1. the restore itself (it verifies the backup first: sums, schema version, row counts);
2. every table's row count in the scratch store against the manifest;
3. the store's integrity check (backup/integrity.py) on the scratch store;
4. a sample of incidents, newest first: each row and its whole timeline read back, every
   event's data decodes as JSON.

The result is a row of `restore_tests`, and through the alert pipeline an alert
`restore-test:<backend>` that fires while the newest test failed and resolves at the next
passing one. The scratch store is deleted afterwards, pass or fail.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, desc, func, select

from nachtwacht.alerts import service as alerts
from nachtwacht.backup.integrity import backend_of, check_store
from nachtwacht.backup.manifest import BackupError
from nachtwacht.backup.restore import restore_backup
from nachtwacht.backup.service import backup_dir, find, list_backups
from nachtwacht.clock import Clock
from nachtwacht.config.schema import Settings
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.store.obligations import once_leased

COMPONENT = "nachtwacht"
# longer than any restore test runs: a claim this old with no result was a process that died
CLAIM_LEASE = 6 * 3600.0
r = t.restore_tests.c


def fingerprint(store: Store) -> str:
    return f"restore-test:{backend_of(store.engine)}"


def _pick(
    settings: Settings, name: str | None, directory: Path | None = None
) -> tuple[Path | None, str | None]:
    """The backup to test (the newest, unless named) or why there is none."""
    directory = directory or backup_dir(settings)
    if name is not None:
        return find(directory, name), None
    found = list_backups(directory)
    if not found:
        return None, f"no backup in {directory} to test"
    return found[0].path, None  # the newest, even when its manifest is unreadable: that fails


def _sample(conn: Connection, n: int) -> tuple[int, int, list[str]]:
    """Read back the `n` newest incidents with their timelines: (incidents, events, problems)."""
    i, e = t.incidents.c, t.incident_events.c
    problems: list[str] = []
    incidents = conn.execute(select(t.incidents).order_by(desc(i.id)).limit(n)).mappings().all()
    events = 0
    for inc in incidents:
        if not inc["title"] or inc["started_at"] is None:
            problems.append(f"incident #{inc['id']} has no title or start time")
        for ev in conn.execute(
            select(e.id, e.kind, e.data_json).where(e.incident_id == inc["id"]).order_by(e.id)
        ):
            events += 1
            if not ev.kind:
                problems.append(f"incident #{inc['id']}: event {ev.id} has no kind")
            try:
                if ev.data_json:
                    json.loads(ev.data_json)
            except ValueError:
                problems.append(f"incident #{inc['id']}: event {ev.id} data is not JSON")
    return len(incidents), events, problems


SCRATCH_PREFIX = ".restore-test-"
STALE_SCRATCH = 86400.0


def scratch_directory(settings: Settings) -> Path:
    """A new directory for the scratch store, in the data directory.

    Not /tmp: that is often memory (tmpfs), and a store's worth of rows would fill it. A
    scratch directory a killed process left behind (older than a day) is removed first.
    """
    base = settings.data_dir
    base.mkdir(parents=True, exist_ok=True)
    for old in base.glob(SCRATCH_PREFIX + "*"):
        try:
            if old.is_dir() and time.time() - old.stat().st_mtime > STALE_SCRATCH:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            continue
    return Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=base))


def check_restore(settings: Settings, path: Path) -> dict[str, Any]:
    """Restore `path` into a scratch SQLite store and check it; the findings, nothing recorded."""
    problems: list[str] = []
    rows = 0
    sampled = events = 0
    manifest = None
    try:
        scratch_dir = scratch_directory(settings)
    except OSError as exc:
        # no room (or no right) for the scratch store is a failed test: its alert must fire
        return _failed(path.name, f"no scratch store in {settings.data_dir}: {exc}")
    scratch = Store(f"sqlite:///{scratch_dir / 'scratch.db'}")
    try:
        try:
            report = restore_backup(path, scratch)
        except BackupError as exc:
            problems.append(str(exc))
            report = None
        if report is not None:
            from nachtwacht.backup.manifest import read_manifest

            manifest = read_manifest(path)
            with scratch.connect() as conn:
                for name, meta in sorted(manifest.tables.items()):
                    table = t.metadata.tables[name]
                    got = int(conn.execute(select(func.count()).select_from(table)).scalar_one())
                    rows += got
                    if got != int(meta["rows"]):
                        problems.append(
                            f"table {name}: {got} rows restored, the manifest says {meta['rows']}"
                        )
                sampled, events, found = _sample(conn, settings.backup.restore_test_sample)
                problems += found
            integrity = check_store(scratch)
            problems += [
                f"integrity {c.name}: {c.detail}" for c in integrity.checks if c.status == "failed"
            ]
    except Exception as exc:  # noqa: BLE001 - whatever stops the test fails it: the alert fires
        problems.append(f"the restore test stopped: {type(exc).__name__}: {exc}")
    finally:
        scratch.dispose()
        shutil.rmtree(scratch_dir, ignore_errors=True)
    ok = not problems
    summary = (
        f"backup {path.name} restored into a scratch SQLite store: {rows} rows, "
        f"{sampled} incident(s) with {events} timeline event(s) read back"
        if ok
        else f"backup {path.name} FAILED the restore test: {problems[0]}"
    )
    return {
        "backup": path.name,
        "backup_created_at": manifest.created_at if manifest else None,
        "ok": ok,
        "rows": rows,
        "incidents": sampled,
        "events": events,
        "problems": problems,
        "summary": summary,
    }


def _failed(backup: str | None, problem: str) -> dict[str, Any]:
    """The result of a test that could not restore anything."""
    return {
        "backup": backup,
        "backup_created_at": None,
        "ok": False,
        "rows": 0,
        "incidents": 0,
        "events": 0,
        "problems": [problem],
        "summary": f"restore test FAILED: {problem}",
    }


def run(
    settings: Settings,
    store: Store,
    clock: Clock,
    name: str | None = None,
    trigger: str = "manual",
    directory: Path | None = None,
) -> dict[str, Any]:
    """Test the newest backup (or `name`), record the result and raise or resolve its alert."""
    started = clock.now()
    try:
        path, missing = _pick(settings, name, directory)
    except BackupError as exc:
        path, missing = None, str(exc)
    if path is None:
        result: dict[str, Any] = _failed(name, missing or "no backup")
    else:
        result = check_restore(settings, path)
    # a pass proves the backup it restored: only the newest one's pass says the alert's
    # "the newest backup restores" (an older one named by hand restoring says nothing of it)
    newest = path is None or name is None or _is_newest(settings, path, directory)
    finished = clock.now()
    with store.begin() as conn:
        result["id"] = record(
            conn, settings, store, result, started, finished, trigger, resolve=newest
        )
    result.update(started_at=started, finished_at=finished, trigger=trigger)
    return result


def _is_newest(settings: Settings, path: Path, directory: Path | None) -> bool:
    try:
        newest, _ = _pick(settings, None, directory)
    except BackupError:
        return False
    return newest is not None and newest.resolve() == path.resolve()


def record(
    conn: Connection,
    settings: Settings,
    store: Store,
    result: dict[str, Any],
    started: float,
    finished: float,
    trigger: str,
    *,
    resolve: bool = True,
) -> int:
    from nachtwacht.store.db import inserted_id

    row_id = inserted_id(
        conn.execute(
            t.restore_tests.insert().values(
                started_at=started,
                finished_at=finished,
                backup=result["backup"],
                backup_created_at=result["backup_created_at"],
                scratch="sqlite (temporary file)",
                ok=result["ok"],
                rows=result["rows"],
                summary=result["summary"][:2000],
                problems_json=json.dumps(result["problems"][:50]),
                trigger=trigger,
            )
        )
    )
    signal = alerts.Signal(
        fingerprint=fingerprint(store),
        source="nachtwacht",
        title="restore test failed: the newest backup does not restore",
        component=COMPONENT,
        severity=2,
        firing=not result["ok"],
        started_at=started,
        detected_at=finished,
        message=result["summary"]
        + ("" if result["ok"] else ". Run `nachtwacht backup test-restore` after fixing it."),
        expected="the newest backup restores into a scratch store with every row",
    )
    if resolve or not result["ok"]:
        alerts.process(conn, settings, signal, finished)
    return row_id


def latest(conn: Connection) -> dict[str, Any] | None:
    row = conn.execute(select(t.restore_tests).order_by(desc(r.id)).limit(1)).mappings().first()
    if row is None:
        return None
    out = dict(row)
    out["problems"] = json.loads(out.pop("problems_json") or "[]")
    return out


def recent(conn: Connection, limit: int) -> list[dict[str, Any]]:
    rows = conn.execute(select(t.restore_tests).order_by(desc(r.id)).limit(limit)).mappings()
    out = []
    for row in rows:
        item = dict(row)
        item["problems"] = json.loads(item.pop("problems_json") or "[]")
        out.append(item)
    return out


def in_range(conn: Connection, since: float, until: float) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(t.restore_tests)
        .where(r.finished_at >= since, r.finished_at < until)
        .order_by(r.finished_at)
    ).mappings()
    return [dict(x) for x in rows]


def status(conn: Connection, settings: Settings, now: float) -> dict[str, Any]:
    """The overview's check: the newest test, and whether one is overdue."""
    every = float(settings.backup.restore_test_every)
    last = latest(conn)
    scheduled = every > 0 and float(settings.backup.interval) > 0
    overdue = scheduled and (last is None or now - last["finished_at"] > every * 1.1)
    if last is None:
        state = "overdue" if overdue else "never"
    elif not last["ok"]:
        state = "failed"
    else:
        state = "overdue" if overdue else "passed"
    return {"state": state, "last": last, "every": every, "scheduled": scheduled}


def claim_due(conn: Connection, settings: Settings, now: float) -> bool:
    """Is a scheduled test due now, and did this process claim it (once per period)?"""
    every = float(settings.backup.restore_test_every)
    if every <= 0:
        return False
    last = conn.execute(select(func.max(r.finished_at))).scalar_one()
    if last is not None and now - float(last) < every:
        return False
    if not list_backups(backup_dir(settings)):
        return False  # nothing to test yet; the backup heartbeat says why
    # the test runs after this claim commits: a process killed mid-test must not use up the
    # period, so a claim with no recorded test after it is taken again after CLAIM_LEASE
    return once_leased(
        conn,
        f"restore-test:{int(now // every)}",
        "restore_test",
        now,
        CLAIM_LEASE,
        None if last is None else float(last),
    )
