"""The `sql` probe against real MariaDB, PostgreSQL and SQLite databases."""

from __future__ import annotations

import importlib.util
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from nachtwacht.clock import FakeClock
from nachtwacht.probes.context import ProbeContext
from nachtwacht.probes.kinds.sql import Config, ProbeImpl
from nachtwacht.probes.results import CheckResult, Status
from tests.conftest import MARIADB_ADMIN, PG_ADMIN, closed_port, need_service

MARIADB = "mariadb"
POSTGRES = "postgresql"
SERVERS = [MARIADB, POSTGRES]


def server_url(server: str) -> str:
    if server == MARIADB:
        need_service("MariaDB", "127.0.0.1", 3306)
        return MARIADB_ADMIN
    need_service("PostgreSQL", "127.0.0.1", 5432)
    return PG_ADMIN


def with_port(url: str, port: int) -> str:
    """The same URL pointing at another port on 127.0.0.1."""
    scheme, rest = url.split("://", 1)
    user, _, tail = rest.partition("@")
    database = tail.split("/", 1)[1]
    return f"{scheme}://{user}@127.0.0.1:{port}/{database}"


def with_database(url: str, database: str) -> str:
    return url.rsplit("/", 1)[0] + f"/{database}"


Maker = Callable[..., ProbeImpl]


@pytest.fixture
async def make_probe() -> AsyncIterator[Maker]:
    """Builds probes and closes every one of them after the test."""
    made: list[ProbeImpl] = []

    def make(url: str, **keys: Any) -> ProbeImpl:
        keys.setdefault("timeout", 5)
        probe = ProbeImpl(
            Config(name="db", kind="sql", url=url, **keys), ProbeContext(clock=FakeClock())
        )
        made.append(probe)
        return probe

    yield make
    for probe in made:
        await probe.close()


async def run(make: Maker, url: str, **keys: Any) -> CheckResult:
    return await make(url, **keys).run()


# --- connectivity -------------------------------------------------------------------------


@pytest.mark.parametrize("server", SERVERS)
async def test_reachable_server_is_ok_with_round_trip_time(server: str, make_probe: Maker) -> None:
    url = server_url(server)
    result = await run(make_probe, url)
    assert result.status is Status.OK, result.message
    assert result.message.startswith("connected to 127.0.0.1:")
    assert "SELECT 1 in " in result.message
    assert result.value is not None and 0 < result.value < 5000
    assert result.latency_ms is not None


@pytest.mark.parametrize("server", SERVERS)
async def test_refused_port_is_critical_naming_host_port_and_database(
    server: str, make_probe: Maker
) -> None:
    url = server_url(server)
    port = closed_port()
    result = await run(make_probe, with_port(url, port))
    assert result.status is Status.CRITICAL
    database = url.rsplit("/", 1)[1]
    assert result.message.startswith(f"cannot connect to 127.0.0.1:{port}/{database}: ")
    assert "Connection refused" in result.message
    assert "\n" not in result.message


@pytest.mark.parametrize("server", SERVERS)
async def test_unknown_database_is_critical_naming_it(server: str, make_probe: Maker) -> None:
    url = with_database(server_url(server), "nw_no_such_db")
    result = await run(make_probe, url)
    assert result.status is Status.CRITICAL
    assert result.message.startswith("cannot connect to 127.0.0.1:")
    assert "/nw_no_such_db: " in result.message
    assert "nw_no_such_db" in result.message.split(": ", 1)[1]  # the driver's own words


async def test_wrong_password_is_critical_and_never_shows_the_password(
    make_probe: Maker,
) -> None:
    url = server_url(MARIADB).replace("root@", "root:Hunter2Secret@", 1)
    result = await run(make_probe, url)
    assert result.status is Status.CRITICAL
    assert "Access denied" in result.message
    assert "[1045]" in result.message
    assert "Hunter2Secret" not in result.message


async def test_unknown_role_on_postgresql_is_critical(make_probe: Maker) -> None:
    url = server_url(POSTGRES).replace("postgres@", "nw_nobody:pw@", 1)
    result = await run(make_probe, url)
    assert result.status is Status.CRITICAL
    assert 'role "nw_nobody" does not exist' in result.message


@pytest.mark.parametrize("server", SERVERS)
async def test_sql_error_is_critical_naming_target_and_driver_error(
    server: str, make_probe: Maker
) -> None:
    result = await run(make_probe, server_url(server), query="SELEC 1")
    assert result.status is Status.CRITICAL
    assert result.message.startswith("query failed on 127.0.0.1:")
    assert "syntax" in result.message.lower()
    assert "\n" not in result.message


# --- thresholds ---------------------------------------------------------------------------


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize(
    ("literal", "status", "message"),
    [
        (5, Status.OK, "query returned 5"),
        (14, Status.WARNING, "query returned 14 (> 10)"),
        (25, Status.CRITICAL, "query returned 25 (> 20)"),
    ],
)
async def test_returned_number_is_judged_against_thresholds(
    server: str, literal: int, status: Status, message: str, make_probe: Maker
) -> None:
    url = server_url(server)
    result = await run(make_probe, url, query=f"SELECT {literal}", warn=10, critical=20)
    assert result.status is status
    assert result.message == message
    assert result.value == literal


@pytest.mark.parametrize("server", SERVERS)
async def test_lower_is_worse_threshold(server: str, make_probe: Maker) -> None:
    result = await run(
        make_probe, server_url(server), query="SELECT 2.5", op="<", warn=10, critical=3
    )
    assert result.status is Status.CRITICAL
    assert result.message == "query returned 2.5 (< 3)"
    assert result.value == 2.5


@pytest.mark.parametrize("server", SERVERS)
async def test_query_reaches_the_driver_verbatim(server: str, make_probe: Maker) -> None:
    # `%` would be a placeholder and `:x` a bind parameter if the text were interpreted
    query = "SELECT 17 % 10 FROM (SELECT ':x' AS label) AS t"
    result = await run(make_probe, server_url(server), query=query, critical=100)
    assert result.status is Status.OK, result.message
    assert result.value == 7


@pytest.mark.parametrize("server", SERVERS)
async def test_text_result_is_unknown_naming_what_came_back(server: str, make_probe: Maker) -> None:
    result = await run(make_probe, server_url(server), query="SELECT 'abc'", warn=1)
    assert result.status is Status.UNKNOWN
    assert result.message == "query returned str 'abc', not a number"
    assert result.value is None


@pytest.mark.parametrize("server", SERVERS)
async def test_null_is_unknown_not_zero(server: str, make_probe: Maker) -> None:
    result = await run(make_probe, server_url(server), query="SELECT NULL", warn=1)
    assert result.status is Status.UNKNOWN
    assert "NULL" in result.message and "COALESCE" in result.message


@pytest.mark.parametrize("server", SERVERS)
async def test_no_row_is_unknown(server: str, make_probe: Maker) -> None:
    result = await run(make_probe, server_url(server), query="SELECT 1 WHERE 1 = 0", warn=1)
    assert result.status is Status.UNKNOWN
    assert result.message.startswith("query returned no row")


async def test_numeric_text_counts_as_a_number(make_probe: Maker) -> None:
    # Frappe keeps tabSingles values as text
    result = await run(make_probe, server_url(MARIADB), query="SELECT '42'", critical=40)
    assert result.status is Status.CRITICAL
    assert result.message == "query returned 42 (> 40)"


async def test_boolean_counts_as_zero_or_one(make_probe: Maker) -> None:
    result = await run(make_probe, server_url(POSTGRES), query="SELECT true", critical=0)
    assert result.status is Status.CRITICAL
    assert result.value == 1


async def test_large_numbers_are_written_in_full(make_probe: Maker) -> None:
    result = await run(
        make_probe, server_url(POSTGRES), query="SELECT 2000000000", warn=1_073_741_824
    )
    assert result.message == "query returned 2000000000 (> 1073741824)"


# --- one engine per probe -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "session_id"),
    [(MARIADB, "SELECT CONNECTION_ID()"), (POSTGRES, "SELECT pg_backend_pid()")],
)
async def test_checks_reuse_one_connection_until_close(
    server: str, session_id: str, make_probe: Maker
) -> None:
    probe = make_probe(server_url(server), query=session_id, critical=1e12)
    first = await probe.run()
    second = await probe.run()
    assert first.status is Status.OK, first.message
    assert first.value == second.value
    await probe.close()
    after_close = await probe.run()  # a new engine, so a new server session
    assert after_close.status is Status.OK
    assert after_close.value != first.value


# --- SQLite -------------------------------------------------------------------------------


def errors_db(path: Path, count: int) -> str:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS errors (id INTEGER PRIMARY KEY, ts REAL)")
        db.executemany("INSERT INTO errors (ts) VALUES (?)", [(1.0,)] * count)
    db.close()
    return f"sqlite:///{path}"


async def test_sqlite_file_is_ok(tmp_path: Path, make_probe: Maker) -> None:
    url = errors_db(tmp_path / "app.db", 0)
    result = await run(make_probe, url)
    assert result.status is Status.OK
    assert result.message.startswith(f"connected to sqlite {tmp_path / 'app.db'}, SELECT 1 in")


async def test_sqlite_count_crosses_warn_then_critical_as_rows_arrive(
    tmp_path: Path, make_probe: Maker
) -> None:
    path = tmp_path / "app.db"
    url = errors_db(path, 3)
    probe = make_probe(url, query="SELECT count(*) FROM errors", warn=5, critical=10)
    assert (await probe.run()).status is Status.OK
    errors_db(path, 3)
    warned = await probe.run()
    assert (warned.status, warned.message) == (Status.WARNING, "query returned 6 (> 5)")
    errors_db(path, 5)
    critical = await probe.run()
    assert (critical.status, critical.message) == (Status.CRITICAL, "query returned 11 (> 10)")


async def test_sqlite_missing_file_is_critical_and_not_created(
    tmp_path: Path, make_probe: Maker
) -> None:
    path = tmp_path / "gone.db"
    result = await run(make_probe, f"sqlite:///{path}")
    assert result.status is Status.CRITICAL
    assert result.message == f"cannot open sqlite {path}: {path} does not exist"
    assert not path.exists()


async def test_sqlite_missing_table_is_critical(tmp_path: Path, make_probe: Maker) -> None:
    url = errors_db(tmp_path / "app.db", 0)
    result = await run(make_probe, url, query="SELECT count(*) FROM nope", warn=1)
    assert result.status is Status.CRITICAL
    assert result.message == f"query failed on sqlite {tmp_path / 'app.db'}: no such table: nope"


async def test_sqlite_date_result_is_unknown(tmp_path: Path, make_probe: Maker) -> None:
    url = errors_db(tmp_path / "app.db", 0)
    result = await run(make_probe, url, query="SELECT date('2030-01-01')", warn=1)
    assert result.status is Status.UNKNOWN
    assert "'2030-01-01', not a number" in result.message


async def test_probe_never_commits(tmp_path: Path, make_probe: Maker) -> None:
    path = tmp_path / "app.db"
    url = errors_db(path, 2)
    await run(make_probe, url, query="DELETE FROM errors")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM errors").fetchone() == (2,)
    db.close()


# --- config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("mysq+pymysql://root:pw@127.0.0.1/test", "unknown database scheme 'mysq+pymysql'"),
        ("http://127.0.0.1/test", "unknown database scheme 'http'"),
        ("just some words", "not a database URL"),
        ("postgresql+asyncpg://u:pw@127.0.0.1/db", "'postgresql+asyncpg' is an asyncio driver"),
    ],
)
def test_bad_url_is_a_config_error(url: str, complaint: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Config(name="db", kind="sql", url=url)
    errors = caught.value.errors(include_input=False)
    assert errors[0]["loc"] == ("url",)
    assert complaint in errors[0]["msg"]
    assert "pw" not in errors[0]["msg"].replace("postgresql", "")


@pytest.mark.skipif(
    importlib.util.find_spec("psycopg2") is not None, reason="psycopg2 is installed here"
)
def test_url_for_a_driver_not_installed_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="psycopg2.*is not installed"):
        Config(name="db", kind="sql", url="postgresql+psycopg2://u@127.0.0.1/db")


def test_unknown_key_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="quer"):
        Config(name="db", kind="sql", url="sqlite:///x.db", quer="SELECT 1")


@pytest.mark.parametrize(
    ("server", "session_id", "kill"),
    [
        (MARIADB, "SELECT CONNECTION_ID()", "KILL {}"),
        (POSTGRES, "SELECT pg_backend_pid()", "SELECT pg_terminate_backend({})"),
    ],
)
async def test_connection_dropped_by_server_is_replaced_without_a_failed_check(
    server: str, session_id: str, kill: str, make_probe: Maker
) -> None:
    from sqlalchemy import create_engine

    url = server_url(server)
    probe = make_probe(url, query=session_id, critical=1e12)
    first = await probe.run()
    assert first.status is Status.OK, first.message
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(kill.format(int(first.value or 0)))
    finally:
        admin.dispose()
    second = await probe.run()
    assert second.status is Status.OK, second.message
    assert second.value != first.value


async def test_statement_without_result_set_is_unknown_in_value_mode(
    tmp_path: Path, make_probe: Maker
) -> None:
    url = errors_db(tmp_path / "app.db", 1)
    result = await run(make_probe, url, query="UPDATE errors SET ts = 2", warn=1)
    assert result.status is Status.UNKNOWN
    assert result.message == "query returned no result set; it must be a SELECT of one number"
