"""Shared fixtures: a fake clock, and stores on SQLite, PostgreSQL and MariaDB.

A test needing a server skips with a reason when the server is missing, except under
CI=true, where it fails instead (CI must exercise every backend).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nachtwacht.clock import FakeClock
from nachtwacht.store.db import Store

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN = os.environ.get(
    "NACHTWACHT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MARIADB_ADMIN = os.environ.get(
    "NACHTWACHT_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test"
)
REDIS_URL = os.environ.get("NACHTWACHT_TEST_REDIS", "redis://127.0.0.1:6379/0")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    """Skip (or, under CI=true, fail) when a server the test needs is not listening."""
    if port_open(host, port):
        return
    message = f"{name} is not listening on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true requires it; .ci/run starts it)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_800_000_000.0)


def _pg_store() -> Iterator[Store]:
    need_service("PostgreSQL", "127.0.0.1", 5432)
    from sqlalchemy import create_engine, text

    name = f"nw_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    store = Store(url)
    try:
        yield store
    finally:
        store.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _mariadb_store() -> Iterator[Store]:
    need_service("MariaDB", "127.0.0.1", 3306)
    from sqlalchemy import create_engine, text

    name = f"nw_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(MARIADB_ADMIN)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    url = MARIADB_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    store = Store(url)
    try:
        yield store
    finally:
        store.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated, empty store on each backend in turn."""
    if request.param == "sqlite":
        gen: Iterator[Store] = iter([Store(f"sqlite:///{tmp_path / 'nachtwacht.db'}")])
    elif request.param == "postgresql":
        gen = _pg_store()
    else:
        gen = _mariadb_store()
    s = next(gen)
    s.migrate()
    yield s
    for _ in gen:
        pass


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'nachtwacht.db'}")
    s.migrate()
    return s
