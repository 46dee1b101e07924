"""The security sources beyond plain log files (issue 17): a Frappe site's `tabActivity Log`
read over SQL on a real MariaDB by a cursor (creation, name) stored with the file positions,
and Nachtwacht's own security log (enable_security_logging) feeding the detectors."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, text

from nachtwacht.analytics.security import classify, log_path
from nachtwacht.clock import FakeClock
from nachtwacht.security.models import AccessEvent, LoginEvent, Source
from nachtwacht.security.parsers import NachtwachtParser
from nachtwacht.security.watch import PREFIX, Watch
from nachtwacht.store.db import Store, meta_key
from tests.conftest import need_service
from tests.incident_fixtures import site
from tests.store_templates import MARIADB_ADMIN
from tests.test_security_detectors import T0
from tests.test_security_watch import alerts, append

# Frappe's `tabActivity Log` as `bench migrate` creates it (frappe/core/doctype/activity_log:
# the doctype's fields and the standard columns every doctype table has)
ACTIVITY_LOG = """
CREATE TABLE `tabActivity Log` (
  `name` varchar(140) NOT NULL,
  `creation` datetime(6) DEFAULT NULL,
  `modified` datetime(6) DEFAULT NULL,
  `modified_by` varchar(140) DEFAULT NULL,
  `owner` varchar(140) DEFAULT NULL,
  `docstatus` tinyint(4) NOT NULL DEFAULT 0,
  `idx` int(11) NOT NULL DEFAULT 0,
  `subject` text DEFAULT NULL,
  `content` longtext DEFAULT NULL,
  `communication_date` datetime(6) DEFAULT NULL,
  `ip_address` varchar(140) DEFAULT NULL,
  `operation` varchar(140) DEFAULT NULL,
  `status` varchar(140) DEFAULT NULL,
  `user` varchar(140) DEFAULT NULL,
  `full_name` varchar(140) DEFAULT NULL,
  `reference_doctype` varchar(140) DEFAULT NULL,
  `reference_name` varchar(140) DEFAULT NULL,
  `reference_owner` varchar(140) DEFAULT NULL,
  `timeline_doctype` varchar(140) DEFAULT NULL,
  `timeline_name` varchar(140) DEFAULT NULL,
  `link_doctype` varchar(140) DEFAULT NULL,
  `link_name` varchar(140) DEFAULT NULL,
  `_user_tags` text DEFAULT NULL,
  `_comments` text DEFAULT NULL,
  `_assign` text DEFAULT NULL,
  `_liked_by` text DEFAULT NULL,
  PRIMARY KEY (`name`),
  KEY `modified` (`modified`),
  KEY `creation` (`creation`)
) ENGINE=InnoDB ROW_FORMAT=DYNAMIC DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
"""
AMS = ZoneInfo("Europe/Amsterdam")


@pytest.fixture
def frappe_db() -> Iterator[str]:
    need_service("MariaDB", "127.0.0.1", 3306)
    name = f"nw_activity_{uuid.uuid4().hex[:10]}"
    admin = create_engine(MARIADB_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    url = MARIADB_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(ACTIVITY_LOG))
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


class Site:
    """Writes rows as Frappe's `add_authentication_log` does (creation in the site's zone)."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        self.n = 0

    def log(self, ts: float, user: str, ip: str, status: str, operation: str = "Login") -> None:
        self.n += 1
        local = datetime.fromtimestamp(ts, AMS).replace(tzinfo=None)
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO `tabActivity Log` (name, creation, modified, owner, subject,"
                    " operation, status, user, full_name, ip_address)"
                    " VALUES (:name, :c, :c, :user, :subject, :op, :status, :user, :user, :ip)"
                ),
                {
                    "name": f"{self.n:010x}"[::-1],  # names are random hashes, not in order
                    "c": local,
                    "user": user,
                    "subject": f"{user} logged in" if status == "Success" else "Login failed",
                    "op": operation,
                    "status": status,
                    "ip": ip,
                },
            )


def test_frappe_login_failures_in_the_activity_log_are_detected_and_the_cursor_resumes(
    sqlite_store: Store, frappe_db: str
) -> None:
    frappe = Site(frappe_db)
    try:
        frappe.log(T0 - 600, "old@example.org", "192.0.2.1", "Failed")  # before first sight
        source = Source(
            name="site", kind="frappe_activity", url=frappe_db, timezone="Europe/Amsterdam"
        )
        clock = FakeClock(T0)
        settings = site(sqlite_store)
        watch = Watch(sqlite_store, settings, clock, [source])
        assert watch.poll().findings == []  # first sight: from the newest row on
        brute = "203.0.113.66"
        # five failures within one second: the same `creation` second, told apart by name
        for i in range(5):
            frappe.log(T0 + 1 + i * 0.2, "Administrator", brute, "Failed")
        frappe.log(T0 + 3, "Administrator", "192.0.2.9", "Success", operation="Logout")
        found = watch.poll().findings
        assert sorted((f.rule, f.key, f.first_ts) for f in found) == [
            ("failed_login", brute, T0 + 1),  # times read in the site's zone
            ("failed_login_account", "user:Administrator", T0 + 1),
        ]
        with sqlite_store.connect() as conn:
            cursor = sqlite_store.get_meta(conn, meta_key(PREFIX, "site"))
        assert set(cursor) == {"creation", "name"}
        watch.close()

        # a restart reads on from the stored cursor, only what is new (its windows start
        # empty): five more failures, then a success from that address, a likely compromise
        again = Watch(sqlite_store, settings, clock, [source])
        for i in range(5):
            frappe.log(T0 + 10 + i, "Administrator", brute, "Failed")
        frappe.log(T0 + 20, "Administrator", brute, "Success")
        found = again.poll().findings
        assert again.detector.events == 6
        assert [(f.rule, f.key, f.severity) for f in found if f.rule == "brute_force_success"] == [
            ("brute_force_success", brute, 1)
        ]
        assert again.poll().findings == []  # nothing new, nothing read twice
        again.close()
        assert ("security:brute_force_success:" + brute, 1, "firing") in alerts(sqlite_store)
    finally:
        frappe.engine.dispose()


def test_more_rows_than_a_poll_reads_are_behind_and_read_next(
    sqlite_store: Store, frappe_db: str
) -> None:
    frappe = Site(frappe_db)
    try:
        source = Source(name="site", kind="frappe_activity", url=frappe_db, from_start=True)
        watch = Watch(sqlite_store, site(sqlite_store), FakeClock(T0), [source])
        watch.max_rows = 3
        for i in range(5):
            frappe.log(T0 + i, f"u{i}", f"198.51.100.{i}", "Failed")
        polled = watch.poll()
        assert polled.behind == {"site": "more than 3 rows"}
        assert watch.detector.events == 3
        assert watch.poll().behind == {}
        assert watch.detector.events == 5
        watch.close()
    finally:
        frappe.engine.dispose()


def test_an_unreachable_site_database_is_an_error_without_its_password(
    sqlite_store: Store,
) -> None:
    url = "mysql+pymysql://frappe:s3cret-pw@127.0.0.1:1/site"
    source = Source(name="site", kind="frappe_activity", url=url)
    watch = Watch(sqlite_store, site(sqlite_store), FakeClock(T0), [source])
    polled = watch.poll()
    [error] = polled.errors
    assert error.startswith("frappe_activity site: cannot read tabActivity Log")
    assert "s3cret-pw" not in error
    watch.close()


def test_a_source_kind_takes_a_path_or_a_url() -> None:
    with pytest.raises(ValueError, match="give url"):
        Source(name="a", kind="frappe_activity")
    with pytest.raises(ValueError, match="takes url, not path"):
        Source(name="a", kind="frappe_activity", url="mysql+pymysql://x@h/db", path="/x")
    with pytest.raises(ValueError, match="starts with mysql"):
        Source(name="a", kind="frappe_activity", url="postgresql+psycopg://x@h/db")
    with pytest.raises(ValueError, match="needs a path"):
        Source(name="a", kind="nginx")
    with pytest.raises(ValueError, match="only kind frappe_activity"):
        Source(name="a", kind="sshd", path="/x", url="mysql+pymysql://x@h/db")


# -- Nachtwacht's own security log -------------------------------------------------------------


def own(ts: float, event: str, status: int, path: str = "/login", method: str = "POST") -> str:
    """A line as analytics.security.log_request writes it."""
    return json.dumps(
        {
            "ts": datetime.fromtimestamp(ts, UTC).isoformat(),
            "event": event,
            "method": method,
            "path": path,
            "status": status,
            "actor": None,
            "role": None,
            "via": None,
            "ip": "203.0.113.9",
        }
    )


def test_the_own_log_parses_with_the_events_log_request_writes() -> None:
    # the events are classify's, so a renamed event breaks this test, not the watch silently
    assert classify("POST", "/login", 401, None) == ("login.failure", 30)
    assert classify("GET", "/api/v1/incidents", 403, None)[0] == "auth.failure"  # type: ignore[index]
    parser = NachtwachtParser()
    assert parser.parse(own(T0, "login.failure", 401)) == LoginEvent(T0, "203.0.113.9", "", False)
    assert parser.parse(own(T0, "auth.failure", 403, "/api/v1/x", "GET")) == AccessEvent(
        T0, "203.0.113.9", "GET", "/api/v1/x", 403
    )
    assert parser.parse(own(T0, "auth.success", 200, "/", "GET")) is None
    assert parser.parse("not json") is None
    assert (parser.ignored, parser.malformed) == (1, 1)


def test_failed_dashboard_logins_in_the_own_log_fire(sqlite_store: Store, tmp_path: Path) -> None:
    settings = site(sqlite_store)
    # no path: the log enable_security_logging writes, security.log beside the SQLite store
    log = log_path(settings)
    assert log == tmp_path / "security.log"
    log.touch()
    watch = Watch(
        sqlite_store, settings, FakeClock(T0), [Source(name="nachtwacht", kind="nachtwacht")]
    )
    watch.poll()
    append(log, *(own(T0 + i, "login.failure", 401) for i in range(5)))
    assert [(f.rule, f.key) for f in watch.poll().findings] == [("failed_login", "203.0.113.9")]
    append(log, *(own(T0 + 10 + i, "auth.failure", 403, "/api/v1/x", "GET") for i in range(3)))
    assert [(f.rule, f.key) for f in watch.poll().findings] == [("unauthorized", "203.0.113.9")]
    watch.close()


def test_with_the_activity_log_a_login_in_the_access_log_is_not_counted_twice(
    sqlite_store: Store, frappe_db: str, tmp_path: Path
) -> None:
    from tests.test_security_detectors import nginx

    frappe = Site(frappe_db)
    access = tmp_path / "access.log"
    access.touch()
    sources = [
        Source(name="site", kind="frappe_activity", url=frappe_db, timezone="Europe/Amsterdam"),
        Source(name="web", kind="nginx", path=str(access)),
    ]
    try:
        watch = Watch(sqlite_store, site(sqlite_store), FakeClock(T0), sources)
        watch.poll()
        brute = "203.0.113.70"
        # three failed logins, each in both places: three, not six (which would fire)
        for i in range(3):
            frappe.log(T0 + i, "Administrator", brute, "Failed")
        append(access, *(nginx(T0 + i, brute, "/api/method/login", 401, "POST") for i in range(3)))
        assert watch.poll().findings == []
        assert watch.detector._w["failed_login"].count(brute) == 3
        watch.close()
    finally:
        frappe.engine.dispose()
