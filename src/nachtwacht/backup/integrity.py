"""`nachtwacht store check`: the backend's own integrity check, the catalog, the schema version.

`check_store(store)` never raises: an unreachable or unreadable store is a failed check in the
report, so `status`, the restoration checklist and the API can show it like any other problem.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, Engine, func, inspect, select, text
from sqlalchemy.exc import SQLAlchemyError

from nachtwacht.store import auditchain
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store, StoreError

CheckStatus = Literal["ok", "failed", "skipped"]
# how many messages of a failed check are kept (integrity_check can list thousands)
_MAX_MESSAGES = 5


@functools.cache
def code_head() -> str:
    """The Alembic revision this code migrates to (e.g. "0004")."""
    from alembic.script import ScriptDirectory

    from nachtwacht.store.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise RuntimeError("no migrations found")
    return head


def read_revision(conn: Connection) -> str | None:
    """The revision in the store's alembic_version table; None if it has none (not migrated)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    # one head only: a second row would be a branched history this code never creates
    return ",".join(sorted(str(r) for r in rows)) or None


def backend_of(engine: Engine | Connection) -> str:
    """sqlite, postgresql or mariadb (the names the docs and manifests use)."""
    name = engine.dialect.name
    return "mariadb" if name == "mysql" else name


@dataclass(frozen=True)
class Check:
    name: str
    status: CheckStatus
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass
class IntegrityReport:
    store: str
    backend: str
    code_head: str
    schema_version: str | None = None
    checks: list[Check] = field(default_factory=list)
    row_counts: dict[str, int] = field(default_factory=dict)
    audit_chain: auditchain.ChainReport | None = None

    @property
    def ok(self) -> bool:
        return all(c.status != "failed" for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "failed"]

    def summary(self) -> str:
        """One line: `ok (postgresql, schema 0004, 6 checks)` or the failed checks."""
        if self.ok:
            return (
                f"ok ({self.backend}, schema {self.schema_version}, "
                f"{len(self.checks)} checks, {sum(self.row_counts.values())} rows)"
            )
        return "; ".join(f"{c.name}: {c.detail}" for c in self.failed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "store": self.store,
            "backend": self.backend,
            "schema_version": self.schema_version,
            "code_head": self.code_head,
            "summary": self.summary(),
            "checks": [c.as_dict() for c in self.checks],
            "row_counts": dict(self.row_counts),
            "audit_chain": None if self.audit_chain is None else self.audit_chain.as_dict(),
        }


def check_store(store: Store) -> IntegrityReport:
    """Run every check that applies to the store's backend; never raises."""
    report = IntegrityReport(store.describe(), backend_of(store.engine), code_head())
    database = store.engine.url.database
    in_file = report.backend == "sqlite" and database and database != ":memory:"
    if in_file and not Path(str(database)).is_file():  # connecting would create an empty one
        report.checks.append(Check("connect", "failed", f"{database} does not exist"))
        return report
    try:
        with store.connect() as conn:
            _run(conn, report, "schema version", lambda: _schema(conn, report))
            _run(conn, report, "catalog", lambda: _catalog(conn))
            _run(conn, report, "row counts", lambda: _counts(conn, report))
            _run(conn, report, "audit chain", lambda: _audit_chain(conn, report))
            for name, check in _BACKEND_CHECKS.get(report.backend, ()):
                _run(conn, report, name, functools.partial(check, conn))
    except (StoreError, SQLAlchemyError, sqlite3.Error, OSError) as exc:
        report.checks.append(Check("connect", "failed", _reason(exc)))
    return report


def _run(
    conn: Connection,
    report: IntegrityReport,
    name: str,
    work: Callable[[], tuple[CheckStatus, str]],
) -> None:
    """Record one check; an error of the database is that check failing, not the whole run."""
    try:
        status, detail = work()
    except (SQLAlchemyError, sqlite3.Error) as exc:
        status, detail = "failed", _reason(exc)
        # PostgreSQL refuses every further statement of an aborted transaction
        conn.rollback()
    report.checks.append(Check(name, status, detail))


def _schema(conn: Connection, report: IntegrityReport) -> tuple[CheckStatus, str]:
    revision = read_revision(conn)
    report.schema_version = revision
    head = report.code_head
    if revision is None:
        return "failed", "no alembic_version table: the store was never migrated"
    if revision != head:
        return (
            "failed",
            f"the store is at schema {revision}, this Nachtwacht expects {head} "
            "(start `nachtwacht serve` once to migrate, or run the matching Nachtwacht version)",
        )
    return "ok", f"schema {revision} is the code's head"


def _catalog(conn: Connection) -> tuple[CheckStatus, str]:
    """Every table, column, index and unique constraint of store/tables.py is present."""
    insp = inspect(conn)
    present = set(insp.get_table_names())
    problems: list[str] = []
    indexes = 0
    for table in t.metadata.sorted_tables:
        if table.name not in present:
            problems.append(f"table {table.name} is missing")
            continue
        columns = {c["name"] for c in insp.get_columns(table.name)}
        problems += [
            f"column {table.name}.{c.name} is missing"
            for c in table.columns
            if c.name not in columns
        ]
        names = {i["name"] for i in insp.get_indexes(table.name)}
        names |= {u["name"] for u in insp.get_unique_constraints(table.name)}
        expected = [i.name for i in table.indexes] + [
            c.name for c in table.constraints if c.__class__.__name__ == "UniqueConstraint"
        ]
        indexes += len(expected)
        problems += [f"index {name} is missing" for name in expected if name not in names]
    if problems:
        return "failed", _join(problems)
    return "ok", f"{len(t.metadata.tables)} tables and {indexes} indexes present"


def _counts(conn: Connection, report: IntegrityReport) -> tuple[CheckStatus, str]:
    """count(*) of every table: reads each table through, so an unreadable page shows here."""
    for table in t.metadata.sorted_tables:
        report.row_counts[table.name] = int(
            conn.execute(select(func.count()).select_from(table)).scalar_one()
        )
    conn.rollback()  # end the read transaction: long ones hold back SQLite checkpoints
    return "ok", f"{sum(report.row_counts.values())} rows in {len(report.row_counts)} tables"


def _audit_chain(conn: Connection, report: IntegrityReport) -> tuple[CheckStatus, str]:
    """Every audit entry's hash, and its link to the one before (decision 28)."""
    if report.schema_version != report.code_head:
        return "skipped", "the store is not at this code's schema"
    chain = auditchain.verify(conn)
    conn.rollback()
    report.audit_chain = chain
    return ("ok" if chain.ok else "failed"), chain.describe()


def _sqlite_integrity(conn: Connection) -> tuple[CheckStatus, str]:
    rows = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA integrity_check").all()]
    if rows == ["ok"]:
        return "ok", "PRAGMA integrity_check: ok"
    return "failed", "PRAGMA integrity_check: " + _join(rows)


def _sqlite_foreign_keys(conn: Connection) -> tuple[CheckStatus, str]:
    rows = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
    if not rows:
        return "ok", "PRAGMA foreign_key_check: no violations"
    return "failed", "PRAGMA foreign_key_check: " + _join(
        f"{r[0]} rowid {r[1]} -> {r[2]}" for r in rows
    )


def _mariadb_check_table(conn: Connection) -> tuple[CheckStatus, str]:
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(name) for name in t.metadata.tables)
    problems: list[str] = []
    for table, _op, msg_type, msg_text in conn.exec_driver_sql(f"CHECK TABLE {names}").all():
        kind = str(msg_type).lower()
        if kind == "error" or (kind == "status" and str(msg_text).upper() != "OK"):
            problems.append(f"{table}: {msg_text}")
    if problems:
        return "failed", "CHECK TABLE: " + _join(problems)
    return "ok", f"CHECK TABLE: {len(t.metadata.tables)} tables OK"


def _pg_amcheck(conn: Connection) -> tuple[CheckStatus, str]:
    installed = conn.execute(
        text("SELECT extversion FROM pg_extension WHERE extname = 'amcheck'")
    ).scalar()
    if installed is None:
        return (
            "skipped",
            "amcheck is not installed (`CREATE EXTENSION amcheck;` as a superuser enables "
            "B-tree index checks)",
        )
    rows = conn.execute(
        text(
            "SELECT c.relname, bt_index_check(c.oid) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_class tb ON tb.oid = i.indrelid "
            "JOIN pg_am am ON am.oid = c.relam "
            "WHERE am.amname = 'btree' AND tb.relname = ANY(:names) "
            "AND tb.relnamespace = to_regnamespace(current_schema())"
        ),
        {"names": list(t.metadata.tables)},
    ).all()
    return "ok", f"amcheck bt_index_check: {len(rows)} B-tree indexes consistent"


_BACKEND_CHECKS: dict[
    str, tuple[tuple[str, Callable[[Connection], tuple[CheckStatus, str]]], ...]
] = {
    "sqlite": (("integrity_check", _sqlite_integrity), ("foreign_key_check", _sqlite_foreign_keys)),
    "mariadb": (("check table", _mariadb_check_table),),
    "postgresql": (("amcheck", _pg_amcheck),),
}


def _join(items: Any) -> str:
    items = list(items)
    more = f" (and {len(items) - _MAX_MESSAGES} more)" if len(items) > _MAX_MESSAGES else ""
    return "; ".join(str(i) for i in items[:_MAX_MESSAGES]) + more


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    lines = str(orig if orig is not None else exc).strip().splitlines()
    return lines[0] if lines else exc.__class__.__name__
