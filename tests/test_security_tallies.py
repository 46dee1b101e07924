"""Daily tallies (issue 17): the watch counts what its sources showed per UTC day and kind,
upserted once per (day, kind, key) in the transaction of the findings and read positions, on
SQLite, PostgreSQL and MariaDB; keys beyond the cap fold into "(other)"."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from nachtwacht.clock import FakeClock
from nachtwacht.security import tallies
from nachtwacht.security.models import Source
from nachtwacht.security.watch import Watch
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.incident_fixtures import site
from tests.test_security_detectors import T0, failed, nginx, syslog
from tests.test_security_watch import append

DAY = "2026-12-08"


def rows(store: Store) -> dict[tuple[str, str, str], tuple[int, float]]:
    c = t.security_tallies.c
    with store.connect() as conn:
        found = conn.execute(select(c.day, c.kind, c.key, c.n, c.last_ts)).all()
    return {(r.day, r.kind, r.key): (int(r.n), float(r.last_ts)) for r in found}


def test_the_watch_tallies_each_kind_per_day_on_every_backend(store: Store, tmp_path: Path) -> None:
    access, auth = tmp_path / "access.log", tmp_path / "auth.log"
    access.touch()
    auth.touch()
    sources = [
        Source(name="web", kind="nginx", path=str(access)),
        Source(name="ssh", kind="sshd", path=str(auth)),
    ]
    clock = FakeClock(T0)
    watch = Watch(store, site(store), clock, sources)
    watch.poll()
    a, b = "203.0.113.5", "198.51.100.9"
    append(
        access,
        nginx(T0, a, "/app", 403),
        nginx(T0 + 1, a, "/app", 401),
        nginx(T0 + 2, b, "/nope?x=1", 404),
        nginx(T0 + 3, b, "/.env", 404),  # a 404 and a probe path
        nginx(T0 + 4, b, "/api/x", 429),
        nginx(T0 + 5, a, "/api/method/login", 401, "POST"),  # a failed login, not a refusal
        nginx(T0 + 6, a, "/app", 200),  # normal traffic: nothing
        nginx(T0 + 7, b, "/.git/config", 200),  # a probe path answered: counted once
    )
    append(
        auth,
        failed(T0 + 10, addr=b, user="root"),
        failed(T0 + 11, addr=b, user="root"),
        syslog(T0 + 12, f"Accepted password for deploy from {a} port 2 ssh2"),
    )
    polled = watch.poll()
    assert polled.tallied == 13  # rows: (day, kind, key)
    expected = {
        (DAY, "refused", a): (2, T0 + 1),
        (DAY, "not_found", "/nope"): (1, T0 + 2),
        (DAY, "not_found", "/.env"): (1, T0 + 3),
        (DAY, "probe_path", "/.env"): (1, T0 + 3),
        # and under the address, for the report's events per address (the /.env request
        # once: as a 404, not again as a probe path)
        (DAY, "not_found", b): (2, T0 + 3),
        (DAY, "probe_path", "/.git/config"): (1, T0 + 7),
        (DAY, "probe_path", b): (1, T0 + 7),
        (DAY, "rate_limited", b): (1, T0 + 4),
        (DAY, "failed_login", a): (1, T0 + 5),
        (DAY, "failed_login", b): (2, T0 + 11),
        (DAY, "failed_login", "user:root"): (2, T0 + 11),
        (DAY, "login", a): (1, T0 + 12),
        (DAY, "login", "user:deploy"): (1, T0 + 12),
    }
    assert rows(store) == expected
    # the next poll adds to the same rows (and a line written out of order keeps last_ts)
    append(access, nginx(T0 + 20, a, "/app", 403), nginx(T0 - 5, a, "/app", 403))
    append(auth, failed(T0 + 86400, addr=b, user="root"))  # the next UTC day: a new row
    watch.poll()
    after = rows(store)
    assert after[(DAY, "refused", a)] == (4, T0 + 20)
    assert after[("2026-12-09", "failed_login", b)] == (1, T0 + 86400)
    watch.close()


def test_keys_beyond_the_cap_fold_into_other(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tallies, "MAX_KEYS", 3)
    writer = tallies.Writer()
    tally = tallies.Tally()
    for i in range(5):
        tally.add("refused", f"192.0.2.{i}", T0 + i)
    tally.add("refused", "192.0.2.0", T0 + 10)
    with sqlite_store.begin() as conn:
        writer.write(conn, tally.take())
    assert rows(sqlite_store) == {
        (DAY, "refused", "192.0.2.0"): (2, T0 + 10),
        (DAY, "refused", "192.0.2.1"): (1, T0 + 1),
        (DAY, "refused", "192.0.2.2"): (1, T0 + 2),
        (DAY, "refused", "(other)"): (2, T0 + 4),
    }
    # a new writer (a restart) reads what is stored: a stored key still counts as itself
    tally.add("refused", "192.0.2.1", T0 + 20)
    tally.add("refused", "192.0.2.9", T0 + 21)
    with sqlite_store.begin() as conn:
        tallies.Writer().write(conn, tally.take())
    after = rows(sqlite_store)
    assert after[(DAY, "refused", "192.0.2.1")] == (2, T0 + 20)
    assert after[(DAY, "refused", "(other)")] == (3, T0 + 21)
    assert len(after) == 4


def test_a_long_key_fits_the_column_and_stays_distinct() -> None:
    one, two = "/" + "a" * 400, "/" + "a" * 399 + "b"
    assert len(tallies.fit(one)) == 200 and tallies.fit(one) != tallies.fit(two)


def test_a_poll_s_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tallies, "MAX_BATCH_KEYS", 10)
    tally = tallies.Tally()
    for i in range(100):
        tally.add("not_found", f"/p{i}", T0)
    counts = tally.take()
    assert len(counts) == 11 and counts[(DAY, "not_found", "(other)")] == [90, T0]
