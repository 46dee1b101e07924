"""Migrated, empty test stores made by copying a template instead of migrating each time.

Running the Alembic migrations costs far more than most store tests (on PostgreSQL and
MariaDB it was most of the suite's time), so each pytest process (each xdist worker) migrates
one template per backend the first time a test asks for that backend, and every test gets a
copy of it: a file copy on SQLite, `CREATE DATABASE ... TEMPLATE` on PostgreSQL, and on
MariaDB (which has no database templates) a new database built from the template's own
`SHOW CREATE TABLE` statements plus its `alembic_version` row. Each test still owns a whole
database, so a test may alter or break its schema, or hand the URL to a subprocess, without
touching any other test. tests/test_store_templates.py checks that a copy and a real migration
give the same catalog. See docs/decisions/0016-test-stores-copied-from-a-migrated-template.md.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, create_engine, text

from nachtwacht.store.db import Store

PG_ADMIN = os.environ.get(
    "NACHTWACHT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MARIADB_ADMIN = os.environ.get(
    "NACHTWACHT_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test"
)
# xdist workers are gw0, gw1, ...; a plain `pytest` run is one process
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")


def _unique(prefix: str) -> str:
    # the worker id keeps names apart between workers; the random part between concurrent
    # sessions on one server (several checkouts may run their suites at the same time)
    return f"{prefix}_{WORKER}_{uuid.uuid4().hex[:10]}"


def pg_url(name: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def mariadb_url(name: str) -> str:
    return MARIADB_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def empty_pg() -> Iterator[Store]:
    """A new, empty (unmigrated) PostgreSQL database; exhaust the generator to drop it."""
    name = _unique("nw_test")
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield from _owned_pg(admin, name)


def empty_mariadb() -> Iterator[Store]:
    """A new, empty (unmigrated) MariaDB database; exhaust the generator to drop it."""
    name = _unique("nw_test")
    admin = create_engine(MARIADB_ADMIN)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    yield from _owned_mariadb(admin, name)


def _owned_pg(admin: Engine, name: str) -> Iterator[Store]:
    store = Store(pg_url(name))
    try:
        yield store
    finally:
        store.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _owned_mariadb(admin: Engine, name: str) -> Iterator[Store]:
    store = Store(mariadb_url(name))
    try:
        yield store
    finally:
        store.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@dataclass
class Templates:
    """This process's migrated templates, made on first use and dropped at session end."""

    workdir: Path
    _sqlite: Path | None = None
    _pg: str | None = None
    _mariadb: tuple[str, list[str], str] | None = None  # name, CREATE TABLEs, version
    _cleanup: list[str] = field(default_factory=list)

    # -- SQLite: copy a file ----------------------------------------------------------------

    def sqlite(self, path: Path) -> Store:
        if self._sqlite is None:
            template = self.workdir / "template.db"
            store = Store(f"sqlite:///{template}")
            store.migrate()
            with store.begin() as conn:
                # everything into the main file: a copy of it alone is then the whole store
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            store.dispose()
            self._sqlite = template
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._sqlite, path)
        return Store(f"sqlite:///{path}")

    # -- PostgreSQL: CREATE DATABASE ... TEMPLATE ---------------------------------------------

    def postgresql(self) -> Iterator[Store]:
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        if self._pg is None:
            name = _unique("nw_tmpl")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            self._cleanup.append(f"pg:{name}")
            store = Store(pg_url(name))
            store.migrate()
            # CREATE DATABASE ... TEMPLATE refuses a template with open connections
            store.dispose()
            self._pg = name
        name = _unique("nw_test")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self._pg}"'))
        yield from _owned_pg(admin, name)

    # -- MariaDB: replay the template's CREATE TABLEs -----------------------------------------

    def mariadb(self) -> Iterator[Store]:
        admin = create_engine(MARIADB_ADMIN)
        if self._mariadb is None:
            name = _unique("nw_tmpl")
            with admin.begin() as conn:
                conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
            self._cleanup.append(f"mariadb:{name}")
            store = Store(mariadb_url(name))
            store.migrate()
            with store.connect() as conn:
                tables = conn.execute(text("SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'"))
                ddl = [
                    conn.execute(text(f"SHOW CREATE TABLE `{row[0]}`")).one()[1] for row in tables
                ]
                version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            store.dispose()
            self._mariadb = (name, ddl, str(version))
        _, ddl, version = self._mariadb
        name = _unique("nw_test")
        with admin.begin() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        owned = _owned_mariadb(admin, name)
        store = next(owned)
        try:
            raw = store.engine.raw_connection()
            try:
                cur = raw.cursor()
                # the statements come in name order, not in foreign-key order
                cur.execute("SET FOREIGN_KEY_CHECKS = 0")
                for statement in ddl:
                    cur.execute(statement)  # no parameters: the DDL's % and : stay as they are
                cur.execute("SET FOREIGN_KEY_CHECKS = 1")
                cur.execute("INSERT INTO alembic_version (version_num) VALUES (%s)", (version,))
                cur.close()
                raw.commit()
            finally:
                raw.close()
        except BaseException:
            owned.close()  # drops the half-made database
            raise
        yield store
        yield from owned

    # -- the session's end ---------------------------------------------------------------------

    def drop(self) -> None:
        for entry in self._cleanup:
            kind, name = entry.split(":", 1)
            try:
                if kind == "pg":
                    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
                    with admin.connect() as conn:
                        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                else:
                    admin = create_engine(MARIADB_ADMIN)
                    with admin.begin() as conn:
                        conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
                admin.dispose()
            except Exception:  # the server went away at teardown: nothing left to drop
                pass
        self._cleanup.clear()
