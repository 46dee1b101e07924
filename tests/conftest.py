"""Shared fixtures: a fake clock, and stores on SQLite, PostgreSQL and MariaDB.

A test needing a server skips with a reason when the server is missing, except under
CI=true, where it fails instead (CI must exercise every backend).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from nachtwacht.clock import FakeClock
from nachtwacht.store.db import Store
from tests import store_templates
from tests.store_templates import MARIADB_ADMIN, PG_ADMIN, Templates

__all__ = ["MARIADB_ADMIN", "PG_ADMIN"]  # imported from here by many tests

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
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
    """An empty, unmigrated PostgreSQL database (for tests of migrating itself)."""
    need_service("PostgreSQL", "127.0.0.1", 5432)
    yield from store_templates.empty_pg()


def _mariadb_store() -> Iterator[Store]:
    """An empty, unmigrated MariaDB database (for tests of migrating itself)."""
    need_service("MariaDB", "127.0.0.1", 3306)
    yield from store_templates.empty_mariadb()


@pytest.fixture(scope="session")
def migrated_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    templates = Templates(tmp_path_factory.mktemp("store-templates"))
    yield templates
    templates.drop()


def migrated_store(templates: Templates, backend: str, tmp_path: Path) -> Iterator[Store]:
    """A migrated, empty store of `backend` (a generator: exhaust it to drop the database)."""
    if backend == "sqlite":
        store = templates.sqlite(tmp_path / "nachtwacht.db")
        yield store
        store.dispose()
    elif backend == "postgresql":
        need_service("PostgreSQL", "127.0.0.1", 5432)
        yield from templates.postgresql()
    else:
        need_service("MariaDB", "127.0.0.1", 3306)
        yield from templates.mariadb()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, migrated_templates: Templates
) -> Iterator[Store]:
    """A migrated, empty store on each backend in turn (a copy of this worker's template)."""
    yield from migrated_store(migrated_templates, request.param, tmp_path)


@pytest.fixture
def sqlite_store(tmp_path: Path, migrated_templates: Templates) -> Store:
    """A migrated, empty SQLite store at tmp_path/nachtwacht.db."""
    return migrated_templates.sqlite(tmp_path / "nachtwacht.db")
