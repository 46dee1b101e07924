"""Migrated, empty test stores made by copying a template instead of migrating each time.

Running the Alembic migrations costs far more than most store tests (on PostgreSQL and
MariaDB it was most of the suite's time), so each pytest process (each xdist worker) migrates
one template per backend the first time a test asks for that backend, and every test gets a
copy of it: a file copy on SQLite, `CREATE DATABASE ... TEMPLATE` on PostgreSQL, and on
MariaDB (which has no database templates) a new database built from the template's own
`SHOW CREATE TABLE` statements plus its `alembic_version` row. Each test still owns a whole
database, so a test may alter or break its schema, or hand the URL to a subprocess, without
touching any other test. tests/test_store_templates.py checks that a copy and a real migration
give the same catalog. See docs/decisions/0018-test-stores-copied-from-a-migrated-template.md.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

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


def _drop_pg(name: str) -> None:
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def _drop_mariadb(name: str) -> None:
    admin = create_engine(MARIADB_ADMIN)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    finally:
        admin.dispose()


@dataclass
class Templates:
    """This process's migrated templates, made on first use and dropped at session end.

    On the servers even a copy takes the server a while (it writes and syncs every page), so
    the next test's copy is made in a background thread while this test runs, and a test's
    database is dropped there too: the test waits for neither, unless it comes first.
    """

    workdir: Path
    _sqlite: Path | None = None
    _pg: str | None = None
    _mariadb: tuple[list[str], str] | None = None  # the CREATE TABLEs, the schema version
    _templates: list[tuple[str, str]] = field(default_factory=list)  # (backend, name)
    _spare: dict[str, Future[str]] = field(default_factory=dict)  # backend → next copy
    _worker: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="test-stores")
    )

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

    # -- the servers: a copy per test, the next one made ahead ------------------------------

    def postgresql(self) -> Iterator[Store]:
        if self._pg is None:
            self._pg = self._migrated_template("postgresql")
        name = self._take("postgresql", self._pg_copy)
        store = Store(pg_url(name))
        try:
            yield store
        finally:
            store.dispose()
            self._worker.submit(_drop_pg, name)

    def mariadb(self) -> Iterator[Store]:
        if self._mariadb is None:
            name = self._migrated_template("mariadb")
            store = Store(mariadb_url(name))
            with store.connect() as conn:
                tables = conn.execute(text("SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'"))
                ddl = [
                    conn.execute(text(f"SHOW CREATE TABLE `{row[0]}`")).one()[1] for row in tables
                ]
                version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            store.dispose()
            self._mariadb = (ddl, str(version))
        name = self._take("mariadb", self._mariadb_copy)
        store = Store(mariadb_url(name))
        try:
            yield store
        finally:
            store.dispose()
            self._worker.submit(_drop_mariadb, name)

    def _migrated_template(self, backend: str) -> str:
        name = _unique("nw_tmpl")
        if backend == "postgresql":
            admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            url = pg_url(name)
        else:
            admin = create_engine(MARIADB_ADMIN)
            with admin.begin() as conn:
                conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
            url = mariadb_url(name)
        admin.dispose()
        self._templates.append((backend, name))
        store = Store(url)
        store.migrate()
        # CREATE DATABASE ... TEMPLATE refuses a template with open connections
        store.dispose()
        return name

    def _take(self, backend: str, make: Callable[[], str]) -> str:
        spare = self._spare.pop(backend, None)
        name = spare.result() if spare is not None else make()
        self._spare[backend] = self._worker.submit(make)
        return name

    def _pg_copy(self) -> str:
        name = _unique("nw_test")
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self._pg}"'))
        finally:
            admin.dispose()
        return name

    def _mariadb_copy(self) -> str:
        assert self._mariadb is not None
        ddl, version = self._mariadb
        name = _unique("nw_test")
        admin = create_engine(MARIADB_ADMIN)
        try:
            with admin.begin() as conn:
                conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        finally:
            admin.dispose()
        try:
            raw = pymysql.connect(**_mariadb_params(name))
            try:
                with raw.cursor() as cur:
                    # the statements come in name order, not in foreign-key order
                    cur.execute("SET FOREIGN_KEY_CHECKS = 0")
                    for statement in ddl:
                        cur.execute(statement)  # no parameters: the DDL's % stays as it is
                    cur.execute("SET FOREIGN_KEY_CHECKS = 1")
                    cur.execute("INSERT INTO alembic_version (version_num) VALUES (%s)", (version,))
                raw.commit()
            finally:
                raw.close()
        except BaseException:
            _drop_mariadb(name)
            raise
        return name

    # -- the session's end ---------------------------------------------------------------------

    def drop(self) -> None:
        spares = [(backend, f) for backend, f in self._spare.items()]
        self._spare.clear()
        self._worker.shutdown(wait=True)  # the drops still queued, and the copies made ahead
        left = [(b, f.result()) for b, f in spares if f.exception() is None]
        for backend, name in left + self._templates:
            # a server gone at teardown has nothing left to drop
            with contextlib.suppress(Exception):
                (_drop_pg if backend == "postgresql" else _drop_mariadb)(name)
        self._templates.clear()


def _mariadb_params(database: str) -> dict[str, Any]:
    url = make_url(mariadb_url(database))
    return {
        "host": url.host or "127.0.0.1",
        "port": url.port or 3306,
        "user": url.username or "root",
        "password": url.password or "",
        "database": database,
        "charset": "utf8mb4",
    }
