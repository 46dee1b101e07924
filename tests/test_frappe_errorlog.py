"""The Frappe Error Log poller against a real HTTP stand-in of a Frappe site.

The stand-in (`FrappeSite`) serves `GET /api/resource/Error Log` on 127.0.0.1 with token
auth, `creation >=` / `name in` filters, ordering and `limit_start`/`limit_page_length`
paging, seeded with Error Log rows whose `error` is real Python traceback text.
"""

from __future__ import annotations

import inspect
import json
import traceback
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import orjson
import pytest
from aiohttp import web
from sqlalchemy import func, select

from nachtwacht.clock import FakeClock
from nachtwacht.engine.runtime import Runtime
from nachtwacht.errors.frappe import engine as frappe_engine
from nachtwacht.errors.frappe.errorlog import (
    MAX_SEEN,
    Cursor,
    ErrorLogPoller,
    FrappeUnavailable,
    build_event,
    event_id,
    query_since,
)
from nachtwacht.errors.models import FrappeErrorLog
from nachtwacht.errors.pytrace import parse as parse_traceback
from nachtwacht.spool.log import SpoolLog
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.conftest import free_port
from tests.helpers import settings_for

AMS = ZoneInfo("Europe/Amsterdam")

# -- a Frappe site stand-in ----------------------------------------------------------------------


def _frappe_error(status: int, exc_type: str, message: str) -> web.Response:
    body = {
        "exc_type": exc_type,
        "exception": f"frappe.exceptions.{exc_type}: {message}",
        "_server_messages": json.dumps([json.dumps({"message": message})]),
    }
    return web.json_response(body, status=status)


@dataclass
class FrappeSite:
    api_key: str = "a1b2c3d4e5f6a7b"
    api_secret: str = "f0e1d2c3b4a5968"
    rows: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)
    fail_status: int | None = None  # answer everything with this (502, ...)
    forbidden: bool = False  # the key is right but its user may not read Error Log
    port: int = 0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, name: str, creation: str, error: str, method: str = "", ref: str = "") -> None:
        doctype, _, docname = ref.partition("/")
        self.rows.append(
            {
                "name": name,
                "creation": creation,
                "method": method,
                "error": error,
                "seen": 0,
                "reference_doctype": doctype or None,
                "reference_name": docname or None,
            }
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/resource/{doctype}", self._list)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _list(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.requests.append(query)
        if request.match_info["doctype"] != "Error Log":
            return _frappe_error(404, "DoesNotExistError", "DocType not found")
        if self.fail_status is not None:
            return web.Response(status=self.fail_status, text="<html>Bad Gateway</html>")
        if request.headers.get("Authorization") != f"token {self.api_key}:{self.api_secret}":
            return _frappe_error(401, "AuthenticationError", "Invalid API key")
        if self.forbidden:
            return _frappe_error(403, "PermissionError", "No permission for Error Log")
        if query.get("order_by") != "creation asc, name asc":
            return _frappe_error(417, "ValidationError", "unexpected order_by")
        fields = json.loads(query.get("fields", '["name"]'))
        rows = [r for r in self.rows if all(_match(r, f) for f in json.loads(query["filters"]))]
        rows.sort(key=lambda r: (datetime.fromisoformat(r["creation"]), r["name"]))
        start = int(query.get("limit_start", 0))
        page = rows[start : start + int(query.get("limit_page_length", 20))]
        # Frappe renders datetimes with str(): no fraction when the microseconds are 0
        data = [
            {f: str(datetime.fromisoformat(r[f])) if f == "creation" else r.get(f) for f in fields}
            for r in page
        ]
        return web.json_response({"data": data})


def _match(row: dict[str, Any], condition: list[Any]) -> bool:
    fieldname, op, value = condition
    if fieldname == "creation" and op == ">=":
        return datetime.fromisoformat(row["creation"]) >= datetime.fromisoformat(value)
    if fieldname == "name" and op == "in":
        return row["name"] in value
    raise AssertionError(f"the poller asked for an unexpected filter {condition!r}")


@pytest.fixture
async def site() -> AsyncIterator[FrappeSite]:
    s = FrappeSite()
    await s.start()
    yield s
    assert s.runner is not None
    await s.runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# -- real tracebacks -----------------------------------------------------------------------------


class PaymentGatewayError(Exception):
    pass


def _read_rate(rates: dict[str, float], currency: str) -> float:
    return rates[currency]


def _convert(amount: float, currency: str) -> float:
    try:
        return amount * _read_rate({"EUR": 1.0}, currency)
    except KeyError as exc:
        raise PaymentGatewayError(f"no rate for {currency} on ACC-SINV-{int(amount)}") from exc


def conversion_traceback(currency: str, amount: float) -> str:
    try:
        _convert(amount, currency)
    except PaymentGatewayError:
        return traceback.format_exc()
    raise AssertionError("no exception")


def division_traceback() -> str:
    try:
        _ = [10 / n for n in (1, 0)]
    except ZeroDivisionError:
        return traceback.format_exc()
    raise AssertionError("no exception")


# Frappe v15 logs with traceback-with-variables and strips the bench path (format as that
# library prints it; the values are a sample)
FRAPPE_WITH_VARIABLES = """Traceback with variables (most recent call last):
  File "apps/frappe/frappe/app.py", line 114, in application
    response = frappe.api.handle(request)
      request = <Request 'http://erp.example.com/api/method/run_doc_method' [POST]>
      response = None
  File "apps/erpnext/erpnext/accounts/general_ledger.py", line 61, in make_gl_entries
    save_entries(gl_map, adv_adj, update_outstanding, from_repost)
      gl_map = [{'account': 'Debtors - EX', 'debit': 1200.0}]
      adv_adj = False
  File "env/lib/python3.11/site-packages/pymysql/cursors.py", line 153, in execute
    result = self._query(query)
      self = <pymysql.cursors.Cursor object at 0x7f3b2c1d5e10>
      query = "UPDATE `tabGL Entry` SET is_cancelled = 1 WHERE name = 'ACC-GLE-2027-00017'"
pymysql.err.OperationalError: (1213, 'Deadlock found when trying to get lock; try restarting')
"""


def _line_of(func: Any, text: str) -> int:
    lines, start = inspect.getsourcelines(func)
    return start + next(i for i, line in enumerate(lines) if text in line)


def test_a_chained_python_traceback_becomes_the_exception_chain() -> None:
    chain = parse_traceback(conversion_traceback("USD", 1200))
    assert [e["type"] for e in chain] == ["KeyError", "PaymentGatewayError"]
    assert "module" not in chain[0]  # a builtin
    assert chain[0]["value"] == "'USD'"
    assert chain[1]["module"] == __name__
    assert chain[1]["value"] == "no rate for USD on ACC-SINV-1200"
    cause = chain[0]["stacktrace"]["frames"]
    assert [f["function"] for f in cause] == ["_convert", "_read_rate"]
    assert cause[-1]["context_line"] == "return rates[currency]"
    assert cause[-1]["lineno"] == _line_of(_read_rate, "return rates[currency]")
    assert cause[-1]["abs_path"] == __file__ and cause[-1]["in_app"] is True
    # outside a bench or site-packages: directory and file, not where it is installed
    assert cause[-1]["module"] == "tests.test_frappe_errorlog"
    raised = chain[1]["stacktrace"]["frames"]
    assert [f["function"] for f in raised] == ["conversion_traceback", "_convert"]
    # Python 3.11's ^^^^ markers are not context lines
    assert all("^" not in f.get("context_line", "") for f in cause + raised)


def test_frappes_traceback_with_variables_gives_modules_vars_and_in_app() -> None:
    (exc,) = parse_traceback(FRAPPE_WITH_VARIABLES)
    assert exc["type"] == "OperationalError" and exc["module"] == "pymysql.err"
    assert exc["value"].startswith("(1213, 'Deadlock found")
    frames = exc["stacktrace"]["frames"]
    assert [f["module"] for f in frames] == [
        "frappe.app",
        "erpnext.accounts.general_ledger",
        "pymysql.cursors",
    ]
    assert [f["in_app"] for f in frames] == [True, True, False]
    assert frames[1]["context_line"].startswith("save_entries(gl_map")
    assert frames[1]["vars"] == {
        "gl_map": "[{'account': 'Debtors - EX', 'debit': 1200.0}]",
        "adv_adj": "False",
    }


def test_text_without_a_traceback_is_a_message_event() -> None:
    assert parse_traceback("Payment Entry ACC-PAY-0042: gateway said 'card declined'") == []
    cfg = FrappeErrorLog(
        name="erp", url="https://erp.example.com", api_key="k", api_secret="s", project="erp"
    )
    row = {
        "name": "b3c9d1e2f4",
        "creation": "2027-01-15 08:30:00",
        "method": "Stripe Webhook",
        "error": '{"error": "card declined"}',
    }
    event = build_event(row, "https://erp.example.com", cfg, AMS)
    assert event["message"] == "Stripe Webhook"
    assert event["extra"]["error"] == '{"error": "card declined"}'
    assert "exception" not in event
    assert event["timestamp"] == datetime(2027, 1, 15, 7, 30, tzinfo=ZoneInfo("UTC")).timestamp()


def test_the_same_error_logged_twice_groups_together() -> None:
    from nachtwacht.errors.fingerprint import group

    cfg = FrappeErrorLog(name="erp", url="http://erp", api_key="k", api_secret="s", project="p")

    def event(name: str, text: str) -> dict[str, Any]:
        row = {"name": name, "creation": "2027-01-15 08:00:00", "error": text, "method": "x"}
        return build_event(row, "http://erp", cfg, AMS)

    first = group(event("a1", conversion_traceback("USD", 1200)))
    again = group(event("a2", conversion_traceback("GBP", 75)))
    other = group(event("a3", division_traceback()))
    assert first.kind == "frames"
    assert first.current == again.current
    assert first.current != other.current
    assert first.title == "PaymentGatewayError: no rate for USD on ACC-SINV-1200"


# -- the cursor ----------------------------------------------------------------------------------


def test_since_reaches_back_over_the_hour_repeated_at_dst_fall_back() -> None:
    # 2026-10-25 03:00 CEST -> 02:00 CET in Amsterdam; newest row at 02:55 CEST (00:55 UTC)
    newest = datetime(2026, 10, 25, 2, 55)
    now = datetime(2026, 10, 25, 1, 20, tzinfo=ZoneInfo("UTC")).timestamp()  # 02:20 CET
    since = query_since(newest, 600, now, AMS)
    # rows made from 00:45 UTC on read 02:45..02:59 CEST, then 02:00..02:20 CET again
    assert datetime(2026, 10, 25, 1, 30) <= since <= datetime(2026, 10, 25, 2, 0)
    # an ordinary day: exactly newest - lookback
    plain = query_since(datetime(2027, 1, 15, 8, 55), 600, 1_800_000_000.0, AMS)
    assert plain == datetime(2027, 1, 15, 8, 45)


def test_a_storm_narrows_the_window_instead_of_growing_the_cursor() -> None:
    cursor = Cursor("http://erp")
    base = datetime(2027, 1, 15, 8, 0)
    for i in range(MAX_SEEN + 200):
        cursor.take(f"e{i:05d}", base.replace(second=i // 60 % 60, microsecond=i))
    cursor.prune(base)
    assert len(cursor.seen) == MAX_SEEN
    assert cursor.floor == min(cursor.seen.values())
    assert "e00199" not in cursor.seen and "e00200" in cursor.seen
    assert len(json.dumps(cursor.dump())) < 60_000  # fits MariaDB's TEXT
    assert Cursor.load(cursor.dump(), "http://erp") == cursor
    assert Cursor.load(cursor.dump(), "http://other-site").newest is None


# -- polling -------------------------------------------------------------------------------------


def _add_project(store: Store, name: str = "erp", disabled: bool = False) -> int:
    with store.begin() as conn:
        result = conn.execute(
            t.error_projects.insert().values(
                name=name,
                public_key=uuid.uuid4().hex,
                environment="production",
                created_by="tests",
                created_at=1.0,
                disabled=disabled,
            )
        )
        return int(result.inserted_primary_key[0])


def _poller(
    site: FrappeSite, store: Store, spool: SpoolLog, http: aiohttp.ClientSession
) -> ErrorLogPoller:
    cfg = FrappeErrorLog(
        name="erp",
        url=site.url,
        api_key=site.api_key,
        api_secret=site.api_secret,
        project="erp",
        site_timezone="Europe/Amsterdam",
        page_size=3,
    )
    return ErrorLogPoller(cfg, store, spool.put, lambda: http, "UTC")


def _events(spool: SpoolLog) -> list[dict[str, Any]]:
    records = spool.read(None, 10_000)
    assert {r.kind for r in records} <= {"error_event"}
    return [orjson.loads(r.payload) for r in records]


def _seed(site: FrappeSite) -> None:
    site.add("0a1b2c3d01", "2027-01-15 08:40:00.500000", division_traceback(), "Scheduled Job")
    # three at one instant: with page_size 3 one listing page is wholly that instant
    for name in ("0a1b2c3d02", "0a1b2c3d03", "0a1b2c3d04"):
        site.add(name, "2027-01-15 08:41:07.250000", conversion_traceback("USD", 10), "submit")
    site.add(
        "0a1b2c3d05",
        "2027-01-15 08:45:00",
        FRAPPE_WITH_VARIABLES,
        "frappe.desk.form.save.savedocs",
        ref="Sales Invoice/ACC-SINV-2027-00017",
    )
    site.add("0a1b2c3d06", "2027-01-15 08:50:10.000001", "Stripe said: card declined", "Stripe")
    site.add("0a1b2c3d07", "2027-01-15 08:52:00.100000", conversion_traceback("GBP", 5), "x")
    site.add("0a1b2c3d08", "2027-01-15 08:59:59.999999", division_traceback(), "y")


async def test_poll_spools_every_new_row_once_and_resumes_after_a_restart(
    site: FrappeSite,
    sqlite_store: Store,
    clock: FakeClock,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    project_id = _add_project(sqlite_store)
    _seed(site)
    spool = SpoolLog(tmp_path / "spool")
    poller = _poller(site, sqlite_store, spool, http)

    assert await poller.tick(clock.now()) == 8
    events = _events(spool)
    assert [e["event"]["event_id"] for e in events] == [
        event_id(site.url, f"0a1b2c3d0{i}") for i in range(1, 9)
    ]
    assert {e["project_id"] for e in events} == {project_id}
    assert {e["received_at"] for e in events} == {clock.now()}
    first = site.requests[0]
    assert json.loads(first["fields"]) == ["name", "creation"]
    # first poll: a day back (backfill) from 09:00 Amsterdam time
    assert json.loads(first["filters"]) == [["creation", ">=", "2027-01-14 09:00:00.000000"]]
    assert first["limit_page_length"] == "3"
    # the page wholly at 08:41:07.25 was stepped over with limit_start
    assert any(
        r.get("limit_start") == "3" and "08:41:07.250000" in r["filters"] for r in site.requests
    )

    by_name = {e["event"]["extra"]["frappe_error_log"]: e["event"] for e in events}
    invoice = by_name["0a1b2c3d05"]
    assert invoice["timestamp"] == datetime(2027, 1, 15, 8, 45, tzinfo=AMS).timestamp()
    assert invoice["exception"]["values"][-1]["type"] == "OperationalError"
    assert invoice["tags"]["frappe.reference_doctype"] == "Sales Invoice"
    assert invoice["tags"]["frappe.reference_name"] == "ACC-SINV-2027-00017"
    assert invoice["transaction"] == "frappe.desk.form.save.savedocs"
    assert by_name["0a1b2c3d06"]["message"] == "Stripe"
    with sqlite_store.connect() as conn:
        saved = sqlite_store.get_meta(conn, "frappe.errorlog.erp")
    assert saved["newest"] == "2027-01-15 08:59:59.999999"
    assert sorted(n for n, _ in saved["seen"]) == [f"0a1b2c3d0{i}" for i in range(1, 9)]

    clock.advance(60)
    assert await poller.tick(clock.now()) == 0
    # a row that became visible late (older than the newest, within the lookback) and a new one
    site.add("0a1b2c3d09", "2027-01-15 08:57:30.000000", division_traceback(), "deferred")
    site.add("0a1b2c3d10", "2027-01-15 09:00:30.000000", division_traceback(), "z")
    clock.advance(60)
    assert await poller.tick(clock.now()) == 2
    assert len(_events(spool)) == 10

    # restart: new spool, new poller; the cursor comes from the store
    spool.close()
    spool = SpoolLog(tmp_path / "spool")
    poller = _poller(site, sqlite_store, spool, http)
    clock.advance(60)
    assert await poller.tick(clock.now()) == 0
    site.add("0a1b2c3d11", "2027-01-15 09:02:00.000000", division_traceback(), "after restart")
    clock.advance(60)
    assert await poller.tick(clock.now()) == 1
    ids = [e["event"]["event_id"] for e in _events(spool)]
    assert len(ids) == len(set(ids)) == 11
    assert ids[-1] == event_id(site.url, "0a1b2c3d11")
    spool.close()


async def test_a_failed_poll_does_not_move_the_cursor(
    site: FrappeSite,
    sqlite_store: Store,
    clock: FakeClock,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    _add_project(sqlite_store)
    _seed(site)
    spool = SpoolLog(tmp_path / "spool")
    poller = _poller(site, sqlite_store, spool, http)
    site.fail_status = 502
    with pytest.raises(FrappeUnavailable, match="HTTP 502; retrying at the next interval"):
        await poller.tick(clock.now())
    with sqlite_store.connect() as conn:
        assert sqlite_store.get_meta(conn, "frappe.errorlog.erp") is None
    assert _events(spool) == []
    site.fail_status = None
    clock.advance(60)
    assert await poller.tick(clock.now()) == 8
    spool.close()


def _yaml(site: FrappeSite, secret: str) -> str:
    return f"""
errors:
  frappe_error_logs:
    - name: erp
      url: {site.url}
      api_key: {site.api_key}
      api_secret: {secret}
      project: erp
      interval: 30s
"""


async def test_module_health_names_a_refused_key_a_forbidden_user_and_a_missing_project(
    site: FrappeSite, sqlite_store: Store, clock: FakeClock
) -> None:
    _seed(site)
    rt = Runtime.build(
        settings_for(_yaml(site, "wrong-secret"), sqlite_store.url), sqlite_store, clock
    )
    frappe_engine.install(rt)
    module = rt.engine.modules["frappe_errors:erp"]
    assert module.interval == 30.0
    health = module.health
    try:
        assert not await rt.engine.tick_once("frappe_errors:erp")
        assert "no project 'erp'; create it with `nachtwacht project add erp`" in str(
            health.last_error
        )
        _add_project(sqlite_store)
        assert not await rt.engine.tick_once("frappe_errors:erp")
        assert "refused the API key (HTTP 401: AuthenticationError - Invalid API key)" in str(
            health.last_error
        )
        assert "wrong-secret" not in str(health.last_error)

        rt2_settings = settings_for(_yaml(site, site.api_secret), sqlite_store.url)
        module.tick = ErrorLogPoller(
            rt2_settings.errors.frappe_error_logs[0],
            rt.store,
            rt.spool_put,
            rt.ctx.http_session,
            rt2_settings.timezone,
        ).tick
        site.forbidden = True
        assert not await rt.engine.tick_once("frappe_errors:erp")
        assert "HTTP 403" in str(health.last_error) and "System Manager" in str(health.last_error)
        assert health.consecutive_errors == 3
        site.forbidden = False
        assert await rt.engine.tick_once("frappe_errors:erp")
        assert health.consecutive_errors == 0
        assert len(rt.spool.read(None, 100)) == 8

        # through the drainer into issues: the same code path groups together
        rt.drainer.drain_all()
        assert _stored(sqlite_store) == (8, 4)
        # lose the cursor (a crash before it was written): the rows come again, stored once
        with sqlite_store.begin() as conn:
            conn.execute(t.engine_meta.delete().where(t.engine_meta.c.key == "frappe.errorlog.erp"))
        again = ErrorLogPoller(
            rt2_settings.errors.frappe_error_logs[0],
            rt.store,
            rt.spool_put,
            rt.ctx.http_session,
            rt2_settings.timezone,
        )
        assert await again.tick(clock.now()) == 8
        rt.drainer.drain_all()
        assert _stored(sqlite_store) == (8, 4)
    finally:
        await rt.stop()


def _stored(store: Store) -> tuple[int, int]:
    with store.connect() as conn:
        events = conn.execute(select(func.count()).select_from(t.error_events)).scalar_one()
        issues = conn.execute(select(func.count()).select_from(t.error_issues)).scalar_one()
    return events, issues


def test_the_same_traceback_by_json_and_from_the_error_log_is_one_issue(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    """The JSON endpoint over HTTP and the poller against the site, into one store: one issue."""
    from nachtwacht.auth import ingest_keys
    from nachtwacht.errors import issues
    from tests.test_errors_fixtures import server

    site = FrappeSite()
    site.add("0a1b2c3d05", "2027-01-15 08:45:00", FRAPPE_WITH_VARIABLES, "savedocs")
    with server(sqlite_store, tmp_path, clock) as srv:
        with sqlite_store.begin() as conn:
            key = ingest_keys.create_ingest_key(conn, "cron", "errors", clock.now(), actor="tests")[
                "key"
            ]
        value = "(1213, 'Deadlock found when trying to get lock; try restarting')"
        body = {
            "project": "shop",
            "exception": {
                "type": "OperationalError",
                "value": value,
                "stacktrace": FRAPPE_WITH_VARIABLES,
            },
        }
        r = srv.client.post(
            "/api/v1/errors/events", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        assert r.status_code == 200, r.text
        assert srv.drain() == 1

        # the poller runs in the app's event loop, spooling into the app's spool
        portal = srv.client.portal
        portal.call(site.start)
        try:
            cfg = FrappeErrorLog(
                name="erp",
                url=site.url,
                api_key=site.api_key,
                api_secret=site.api_secret,
                project="shop",
                site_timezone="Europe/Amsterdam",
            )
            rt = srv.runtime
            poller = ErrorLogPoller(cfg, sqlite_store, rt.spool_put, rt.ctx.http_session, "UTC")
            assert portal.call(poller.tick, clock.now()) == 1
        finally:
            assert site.runner is not None
            portal.call(site.runner.cleanup)
        assert srv.drain() == 1

    assert _stored(sqlite_store) == (2, 1)
    with sqlite_store.connect() as conn:
        (issue,), _ = issues.list_issues(conn)
    assert issue["count"] == 2
    assert issue["title"] == f"OperationalError: {value}"
    assert issue["culprit"] == "erpnext.accounts.general_ledger in make_gl_entries"
