"""Shared fixtures: a fake clock, and stores on SQLite, PostgreSQL and MariaDB.

A test needing a server skips with a reason when the server is missing, except under
CI=true, where it fails instead (CI must exercise every backend).
"""

from __future__ import annotations

import itertools
import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from _pytest.nodeid import coerce_node_id

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


# free_port() hands out ports from a block of its own per xdist worker, below the kernel's
# ephemeral range (32768-60999 on Linux): the kernel never gives those to a bind(port 0) or to
# an outgoing connection, so between the check here and the server's own bind only an explicit
# bind can take the port, and the other workers pick from other blocks. (A port from a port-0
# bind, closed and handed on, could be taken by any of the suite's many client connections.)
# The start is random so that two suites running at once (two checkouts) rarely meet.
_PORT_BASE, _PORT_BLOCK, _PORT_BLOCKS = 20_000, 250, 20
_ports: Iterator[int] | None = None
_held: list[socket.socket] = []


def _worker_number() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker[2:].isdigit() else 0


def free_port() -> int:
    """A port nothing listens on, for a server the test starts later on it.

    Prefer binding the server to port 0 and asking it for its port; this is for servers that
    cannot say (a `nachtwacht serve` or Alertmanager subprocess, a target restarted on the
    same port). Ports are not repeated until the block has gone round.
    """
    global _ports
    low = _PORT_BASE + (_worker_number() % _PORT_BLOCKS) * _PORT_BLOCK
    if _ports is None:
        start = random.randrange(_PORT_BLOCK)
        _ports = itertools.cycle(low + (start + i) % _PORT_BLOCK for i in range(_PORT_BLOCK))
    for _ in range(_PORT_BLOCK):
        port = next(_ports)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (or in TIME_WAIT): the next one
            return port
    raise RuntimeError(f"no free port in {low}-{low + _PORT_BLOCK - 1}")


def closed_port() -> int:
    """A port where connections are refused for as long as this process runs.

    The socket is bound and never listens: connecting gets a refusal, and no server (in this
    or any process) can bind the port meanwhile, which a free port cannot promise.
    """
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _held.append(s)
    return s.getsockname()[1]


@pytest.hookimpl(tryfirst=True)  # before xdist schedules by node ID
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # `serial` tests (kill -9 and restart of real processes, Chromium) run one after another
    # on one xdist worker: two at once on 2 cores starve each other's subprocesses. Beside
    # the other workers' lighter tests they are fine (they must hold under load anyway).
    #
    # Node IDs are rewritten here because both tools we lean on break under pytest 9, silently:
    # schemathesis gives every operation's item the function's node ID, and xdist's loadgroup
    # schedules by node ID, so all operations but one never ran; and xdist marks a group by
    # setting `item._nodeid`, which pytest 9 no longer reads, so `serial` tests ran side by side.
    # tests/test_xdist_groups.py checks both in a real xdist run.
    # set on xdist workers only, where collection (and so scheduling by node ID) happens
    loadgroup = bool(getattr(config.option, "loadgroup", False))
    for item in items:
        if item.get_closest_marker("serial") is not None:
            item.add_marker(pytest.mark.xdist_group("serial"))
        node_id = item.nodeid
        label = getattr(item, "operation_label", None)
        if label is not None and "[" not in node_id:
            node_id = f"{node_id}[{label}]"
        groups = sorted(
            {
                str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                for m in item.iter_markers("xdist_group")
            }
        )
        if loadgroup and groups and "@" not in node_id.rpartition("]")[2]:
            node_id = f"{node_id}@{'_'.join(groups)}"
        if node_id != item.nodeid:
            item._id = coerce_node_id(node_id)


@pytest.fixture(autouse=True)
def _cwd_per_test(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what the code under test puts in ./ (the spool and data dir of a non-SQLite store,
    # security.log) goes to a directory of this test's own, not into the checkout that all
    # xdist workers share; a sibling of tmp_path so tests listing tmp_path see only theirs
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


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
