"""`sql`: can a database be queried, how fast, and what number does a query return.

Two modes, chosen by whether `warn`/`critical` are set:

- **Connectivity** (no thresholds): run `query` (default `SELECT 1`) and report the
  round-trip time of the query in ms as the value: "connected to 127.0.0.1:3306/test,
  SELECT 1 in 2.3 ms".
- **Value** (`warn` and/or `critical` set): the first column of the first row must be a
  number, judged against the thresholds with `op`: "query returned 14 (> 10)". This is how
  "errors in the last hour > 10" or "minutes since the scheduler last ran > 30" are said.

  Accepted as numbers: integers, floats, decimals, booleans (as 0/1) and text that parses as
  a finite number (Frappe keeps `tabSingles` values as text). Anything else (a date, `'abc'`,
  NaN) is UNKNOWN naming what came back.

  NULL and "no row" are UNKNOWN, deliberately not 0: `MAX(ts)` of a scheduler that never ran
  is NULL, and reading that as "0 minutes ago" would hide exactly the failure being watched.
  Write `COALESCE(..., 0)` in the query when "nothing" really means 0.

The query is sent to the driver verbatim (no bind-parameter parsing, so `%` and `:name`
mean what they mean in the database's own client) and always rolled back: a probe never
commits. Connection, authentication and SQL errors are CRITICAL, naming host/database (never
the password) and the driver's first error line.

One SQLAlchemy engine per probe (small pool, `pool_pre_ping` so a connection the server
dropped is replaced instead of failing a check), created on first use; blocking driver calls
run in a worker thread. The connect timeout comes from the probe's `timeout`. A query that
overruns `timeout` is reported by `Probe.run`; for MySQL/MariaDB the driver's read timeout
also ends the abandoned call, while on PostgreSQL it runs on server-side until it finishes
(use `?options=-c%20statement_timeout%3D5000` in the URL to bound that, where no
pgbouncer is in the way).
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from nachtwacht.probes.base import Probe, ThresholdConfig
from nachtwacht.probes.results import CheckResult, Status

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from nachtwacht.probes.context import ProbeContext

_EXAMPLES = (
    "e.g. mysql+pymysql://user@host:3306/db, postgresql+psycopg://user@host/db "
    "or sqlite:///path/to/file.db"
)


class Config(ThresholdConfig):
    kind: Literal["sql"]
    url: str = Field(min_length=1)
    query: str = Field(default="SELECT 1", min_length=1)

    @field_validator("url")
    @classmethod
    def _usable_url(cls, value: str) -> str:
        # Messages name the scheme only: the URL may hold a password and errors get printed.
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(f"not a database URL ({_EXAMPLES})") from None
        try:
            dialect = url.get_dialect()
        except NoSuchModuleError:
            raise ValueError(f"unknown database scheme {url.drivername!r} ({_EXAMPLES})") from None
        if getattr(dialect, "is_async", False):
            raise ValueError(
                f"{url.drivername!r} is an asyncio driver; use a blocking one ({_EXAMPLES})"
            )
        missing = _missing_driver(dialect)
        if missing is not None:
            raise ValueError(
                f"the driver for {url.drivername!r} ({missing}) is not installed ({_EXAMPLES})"
            )
        return value


# a dialect's driver name -> the module it imports, where the two differ
_DRIVER_MODULES = {
    "pysqlite": "sqlite3",
    "mysqldb": "MySQLdb",
    "mysqlconnector": "mysql.connector",
    "mariadbconnector": "mariadb",
}


def _missing_driver(dialect: Any) -> str | None:
    """The driver module a URL needs when it is not installed, else None.

    Looked up, not imported: reading the config (every CLI command does) must not pay for
    loading psycopg and PyMySQL (about 100 ms); a check imports the driver when it runs.
    """
    name = _DRIVER_MODULES.get(dialect.driver, dialect.driver)
    try:
        found = importlib.util.find_spec(name)
    except ImportError as exc:  # a dotted name whose package is missing
        return exc.name or name
    except ValueError:
        found = None
    if found is not None:
        return None
    try:  # a driver whose module is not named for it: ask the dialect itself
        dialect.import_dbapi()
    except ImportError as exc:
        return exc.name or str(exc)
    return None


class _Failed(Exception):
    """A connect or query failure, carrying which of the two it was."""

    def __init__(self, doing: str, error: BaseException) -> None:
        super().__init__(doing)
        self.doing = doing
        self.error = error


class ProbeImpl(Probe):
    config: Config

    def __init__(self, config: Config, ctx: ProbeContext) -> None:
        super().__init__(config, ctx)
        self._url = make_url(config.url)
        self._target = _target(self._url)
        self._query_label = _shorten(config.query)
        self._engine: Engine | None = None

    def _get_engine(self) -> Engine:
        if self._engine is None:
            url = self._url
            options: dict[str, Any] = {
                "pool_pre_ping": True,
                "connect_args": _connect_args(url, self.config.timeout),
            }
            if url.get_backend_name() != "sqlite":
                # one connection per probe is the steady state; the overflow one covers a
                # check that starts while a timed-out one still holds the first
                options.update(pool_size=1, max_overflow=1, pool_timeout=self.config.timeout)
            self._engine = create_engine(url, **options)
        return self._engine

    async def check(self) -> CheckResult:
        cfg = self.config
        missing = self._missing_sqlite_file()
        if missing is not None:
            # sqlite would create an empty file and report "connected": say what is wrong
            return CheckResult.critical(f"cannot open {self._target}: {missing} does not exist")
        engine = self._get_engine()
        try:
            row, returned_rows, query_ms = await asyncio.to_thread(self._query, engine)
        except _Failed as failed:
            reason = _first_line(failed.error, self._url.password)
            return CheckResult.critical(f"{failed.doing} {self._target}: {reason}")
        if not cfg.has_thresholds:
            return CheckResult.ok(
                f"connected to {self._target}, {self._query_label} in {query_ms:.1f} ms",
                query_ms,
                query_ms,
            )
        if not returned_rows:
            return CheckResult.unknown(
                "query returned no result set; it must be a SELECT of one number",
                latency_ms=query_ms,
            )
        if row is None or row[0] is None:
            what = "no row" if row is None else "NULL"
            return CheckResult.unknown(
                f"query returned {what}; wrap it in COALESCE(..., 0) if that means 0",
                latency_ms=query_ms,
            )
        value = _number(row[0])
        if value is None:
            shown = repr(row[0])
            if len(shown) > 60:
                shown = shown[:57] + "..."
            return CheckResult.unknown(
                f"query returned {type(row[0]).__name__} {shown}, not a number",
                latency_ms=query_ms,
            )
        status = cfg.judge(value)
        return CheckResult(
            status,
            f"query returned {_fmt(value)}{_breached(cfg, status)}",
            value,
            query_ms,
        )

    def _query(self, engine: Engine) -> tuple[Any, bool, float]:
        """Run in a worker thread: (first row or None, whether rows came back, query ms)."""
        try:
            conn = engine.connect()
        except SQLAlchemyError as exc:
            raise _Failed("cannot connect to", exc) from exc
        with conn:
            started = time.perf_counter()
            try:
                # no_parameters: the driver gets cursor.execute(sql) so `%` is not a placeholder
                result = conn.execution_options(no_parameters=True).exec_driver_sql(
                    self.config.query
                )
                returns_rows = result.returns_rows
                row = result.first() if returns_rows else None
                # leaving `with conn` rolls back: a probe never commits
            except SQLAlchemyError as exc:
                raise _Failed("query failed on", exc) from exc
            query_ms = (time.perf_counter() - started) * 1000
        return row, returns_rows, query_ms

    def _missing_sqlite_file(self) -> str | None:
        url = self._url
        if url.get_backend_name() != "sqlite":
            return None
        path = url.database
        if not path or path == ":memory:" or path.startswith("file:"):
            return None
        return None if os.path.exists(path) else path

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await asyncio.to_thread(engine.dispose)


def _connect_args(url: URL, timeout: float) -> dict[str, Any]:
    """The driver's own timeout keys, unless the URL already sets them."""
    driver = url.get_driver_name()
    if driver in ("psycopg", "psycopg2"):
        # libpq takes whole seconds (and treats anything below 2 as 2)
        wanted: dict[str, Any] = {"connect_timeout": max(1, math.ceil(timeout))}
    elif driver in ("pymysql", "mysqldb"):
        seconds = max(1, math.ceil(timeout))
        wanted = {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds}
    elif driver == "pysqlite":
        wanted = {"timeout": timeout}  # how long to wait on a locked database
    else:
        wanted = {}
    return {key: value for key, value in wanted.items() if key not in url.query}


def _target(url: URL) -> str:
    """`127.0.0.1:3306/test` or `sqlite /path/x.db`: where, never with the password."""
    if url.get_backend_name() == "sqlite":
        return f"sqlite {url.database or ':memory:'}"
    host = url.host or "localhost"
    if ":" in host:
        host = f"[{host}]"
    where = f"{host}:{url.port}" if url.port else host
    return f"{where}/{url.database}" if url.database else where


def _first_line(error: BaseException, password: str | None) -> str:
    """The driver's own first line: `Access denied for user ... [1045]`."""
    orig = getattr(error, "orig", None) or error
    args: tuple[Any, ...] = getattr(orig, "args", ())
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        text = f"{args[1]} [{args[0]}]"  # pymysql: (code, message)
    else:
        text = str(orig)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[0] if lines else orig.__class__.__name__
    if password:
        line = line.replace(password, "***")
    return line[:300]


def _number(raw: Any) -> float | None:
    if isinstance(raw, bool | int | float | Decimal):
        value = float(raw)
    elif isinstance(raw, str | bytes):
        try:
            value = float(raw)
        except ValueError:
            return None
    else:
        return None
    return value if math.isfinite(value) else None


def _breached(cfg: ThresholdConfig, status: Status) -> str:
    """` (> 1073741824)`: like `ThresholdConfig.describe`, but without `:g` turning a byte
    limit into `1.07374e+09`."""
    limit = cfg.critical if status is Status.CRITICAL else cfg.warn
    if status is Status.OK or limit is None:
        return ""
    return f" ({cfg.op} {_fmt(limit)})"


def _fmt(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def _shorten(query: str, limit: int = 60) -> str:
    flat = " ".join(query.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
