"""A filler that puts rows into every table of store/tables.py, and what the backup tests share.

The filler derives each value from the column's type, so a table added later is filled too:
unicode text, empty strings, None in nullable columns, large and tiny floats, booleans, 64-bit
integers. Autoincrement ids are left to the store (so its sequences stay right); `results` and
`heartbeat_pings` get more than one chunk of rows (dump.CHUNK_ROWS).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Boolean, Column, Double, Integer, SmallInteger, String, Table

from nachtwacht.backup.dump import CHUNK_ROWS
from nachtwacht.store import auditchain
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.conftest import _mariadb_store, _pg_store

FLOATS = (
    0.1,
    1_800_000_000.123456,
    1e300,
    -2.5e-300,
    1.7976931348623157e308,
    2.2250738585072014e-308,
    -12345.678901234567,
    1 / 3,
)
WORDS = (
    "Zürich – Störung ✓",
    "北京 数据库 🚨 down",
    'say "hi" \\ back\\slash',
    "line one\nline two\ttab",
    "",
    "plain ascii",
)
# written by auditchain.append, which keeps seq, prev_hash and the head consistent
CHAINED = ("audit_log", "audit_head")
BIG_TABLES = {"results": CHUNK_ROWS * 2 + 500, "heartbeat_pings": CHUNK_ROWS + 200}
ROWS = 12


def value_for(column: Column[Any], i: int) -> Any:
    """A value of the column's type for row i; unique per row where a key needs that."""
    kind = column.type
    if column.nullable and not column.primary_key and i % 3 == 2:
        return None
    if isinstance(kind, Boolean):
        return i % 2 == 0
    if isinstance(kind, Double):
        return FLOATS[i % len(FLOATS)]
    if isinstance(kind, SmallInteger):
        return (0, 1, 2, 3, 32767, -32768)[i % 6] if not column.primary_key else i + 1
    if isinstance(kind, BigInteger):
        return i + 1 if column.primary_key else (2**62, -(2**40), i)[i % 3]
    if isinstance(kind, Integer):
        return i + 1 if column.primary_key else (0, 1, -5, 2**31 - 1, i)[i % 5]
    if column.name.endswith("_json"):
        return json.dumps({"i": i, "word": WORDS[i % len(WORDS)], "f": FLOATS[i % 8]})
    if isinstance(kind, String) and kind.length is None:  # Text
        return f"{i}: " + WORDS[i % len(WORDS)] * (1 + i % 4)
    if isinstance(kind, String):
        return (f"{i}-{column.name}-" + WORDS[i % len(WORDS)])[: kind.length].rstrip()
    raise AssertionError(f"the filler does not know {column.table.name}.{column.name}: {kind!r}")


def row_for(table: Table, i: int) -> dict[str, Any]:
    auto = table.autoincrement_column
    return {c.name: value_for(c, i) for c in table.columns if c is not auto}


def fill(store: Store, rows: int = ROWS) -> dict[str, int]:
    """Insert rows into every table; returns {table: rows inserted}."""
    counts: dict[str, int] = {}
    with store.begin() as conn:
        for table in t.metadata.sorted_tables:
            n = BIG_TABLES.get(table.name, rows)
            if table.name in CHAINED:
                continue
            conn.execute(table.insert(), [row_for(table, i) for i in range(n)])
            counts[table.name] = n
        # the audit log only through its chain (decision 28), with the same awkward values
        for i in range(rows):
            entry = row_for(t.audit_log, i)
            auditchain.append(conn, {k: entry[k] for k in auditchain.FIELDS}, FLOATS[i % 8])
        counts.update(audit_log=rows, audit_head=1 if rows else 0)
    return counts


def table_rows(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted by primary key, as plain tuples."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with store.connect() as conn:
        for table in t.metadata.sorted_tables:
            pk = [c.name for c in table.primary_key.columns]
            rows = [r._mapping for r in conn.execute(table.select())]
            out[table.name] = sorted(
                (tuple(r[c.name] for c in table.columns) for r in rows),
                key=lambda row, table=table, pk=pk: tuple(
                    row[list(table.columns.keys()).index(k)] for k in pk
                ),
            )
    return out


def assert_same_rows(
    expected: dict[str, list[tuple[Any, ...]]], actual: dict[str, list[tuple[Any, ...]]]
) -> None:
    """Row by row, value by value, types included (1.0 and 1, True and 1 differ here)."""
    assert set(expected) == set(actual)
    for name in expected:
        assert len(actual[name]) == len(expected[name]), name
        for want, got in zip(expected[name], actual[name], strict=True):
            assert got == want, f"{name}: {got!r} != {want!r}"
            for w, g in zip(want, got, strict=True):
                assert type(w) is type(g), f"{name}: {g!r} ({type(g)}) vs {w!r} ({type(w)})"


class Writer(threading.Thread):
    """Keeps committing a result and a heartbeat ping in one transaction each, tagged w<n>."""

    def __init__(self, store: Store) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.stop = threading.Event()
        self.committed = 0
        self.error: BaseException | None = None
        self.progress = threading.Condition()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                n = self.committed + 1
                with self.store.begin() as conn:
                    conn.execute(
                        t.results.insert().values(
                            probe_id=1, ts=1.9e9 + n, minute=n, status=0, message=f"w{n}"
                        )
                    )
                    conn.execute(
                        t.heartbeat_pings.insert().values(
                            token="writer-token", ts=1.9e9 + n, event="success", body=f"w{n}"
                        )
                    )
                with self.progress:
                    self.committed = n
                    self.progress.notify_all()
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc

    def wait_for(self, commits: int, timeout: float = 30.0) -> None:
        with self.progress:
            assert self.progress.wait_for(lambda: self.committed >= commits, timeout), (
                f"writer stuck at {self.committed} commits ({self.error!r})"
            )

    def finish(self) -> int:
        self.stop.set()
        self.join(30)
        assert self.error is None, repr(self.error)
        return self.committed


def empty_store(backend: str, tmp_path: Path) -> Iterator[Store]:
    """An empty, migrated store of `backend` (a generator: exhaust it to drop the database)."""
    if backend == "sqlite":
        gen: Iterator[Store] = iter(
            [Store(f"sqlite:///{tmp_path / f'target-{len(list(tmp_path.iterdir()))}.db'}")]
        )
    elif backend == "postgresql":
        gen = _pg_store()
    else:
        gen = _mariadb_store()
    store = next(gen)
    store.migrate()
    yield store
    for _ in gen:
        pass


def backend(store: Store) -> str:
    return "mariadb" if store.dialect == "mysql" else store.dialect


# -- the filler itself ---------------------------------------------------------------------------


def test_the_filler_puts_rows_of_every_kind_into_every_table(store: Store) -> None:
    counts = fill(store)
    rows = table_rows(store)
    assert set(rows) == set(t.metadata.tables)
    for name, n in counts.items():
        assert len(rows[name]) == n, name
    values = [v for table in rows.values() for row in table for v in row]
    assert None in values and True in values and False in values
    assert 1e300 in values and 2**62 in values
    assert any(isinstance(v, str) and "🚨" in v for v in values)
    assert len(rows["results"]) > CHUNK_ROWS
