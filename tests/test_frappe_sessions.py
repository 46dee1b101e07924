"""A Frappe site's sessions on real MariaDB and Redis: listed, ended per user and for all but
Administrator, each end audited and on the incident's timeline, the cache cleared as Frappe
clears it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from sqlalchemy import select, text
from typer.testing import CliRunner

from nachtwacht.config.loader import load_config
from nachtwacht.incidents import service as incidents
from nachtwacht.problems import Problem
from nachtwacht.security import frappe_sessions as fs
from nachtwacht.security.sessions_cli import sessions_app
from nachtwacht.store import auditchain
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.conftest import REDIS_URL, closed_port, need_service
from tests.store_templates import _unique, mariadb_url

# tabSessions as Frappe's framework SQL creates it (frappe/database/mariadb/framework_mariadb.sql)
TAB_SESSIONS = """
CREATE TABLE `tabSessions` (
  `user` varchar(255) DEFAULT NULL,
  `sid` varchar(255) DEFAULT NULL,
  `sessiondata` longtext,
  `ipaddress` varchar(16) DEFAULT NULL,
  `lastupdate` datetime(6) DEFAULT NULL,
  `device` varchar(255) DEFAULT 'desktop',
  `status` varchar(20) DEFAULT NULL,
  KEY `sid` (`sid`)
) ENGINE=InnoDB ROW_FORMAT=DYNAMIC CHARACTER SET=utf8mb4 COLLATE=utf8mb4_unicode_ci
"""
# (user, sid, address in sessiondata, lastupdate, device)
SESSIONS = [
    ("alice@example.org", "a1" * 20, "203.0.113.7", "2026-12-08 04:10:00", "desktop"),
    ("alice@example.org", "a2" * 20, "198.51.100.4", "2026-12-08 03:00:00", "mobile"),
    ("bob@example.org", "b1" * 20, "192.0.2.33", "2026-12-08 04:20:00", "desktop"),
    ("Administrator", "ad" * 20, "127.0.0.1", "2026-12-08 04:30:00", "desktop"),
]


@dataclass
class Site:
    name: str
    db_name: str
    bench: Path
    config: Path
    cache: redis.Redis

    def sids(self) -> list[str]:
        store = Store(mariadb_url(self.db_name))
        try:
            with store.connect() as conn:
                return sorted(conn.execute(text("SELECT sid FROM `tabSessions`")).scalars())
        finally:
            store.dispose()

    def cached(self) -> set[str]:
        session, last = (
            k.encode()
            for k in (f"{self.db_name}|session", f"{self.db_name}|last_db_session_update")
        )
        fields = {f.decode() for f in self.cache.hkeys(session)}
        assert fields == {f.decode() for f in self.cache.hkeys(last)}
        return fields


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    need_service("MariaDB", "127.0.0.1", 3306)
    need_service("Redis", "127.0.0.1", 6379)
    db_name = _unique("nw_frappe")
    admin = Store(mariadb_url("test"))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{db_name}` CHARACTER SET utf8mb4"))
    site_db = Store(mariadb_url(db_name))
    cache = redis.Redis.from_url(REDIS_URL)
    try:
        with site_db.begin() as conn:
            conn.execute(text(TAB_SESSIONS))
            for user, sid, ip, last, device in SESSIONS:
                data = (
                    f"{{'user': '{user}', 'session_ip': '{ip}', 'last_updated': '{last}', "
                    "'session_expiry': '240:00:00', 'user_type': 'System User'}"
                )
                conn.execute(
                    text(
                        "INSERT INTO `tabSessions` (user, sid, sessiondata, lastupdate, device, "
                        "status) VALUES (:u, :s, :d, :l, :dev, 'Active')"
                    ),
                    {"u": user, "s": sid, "d": data, "l": last, "dev": device},
                )
                # Frappe's cache: the pickled session under <db_name>|session, and the time of
                # its last write to the database under <db_name>|last_db_session_update
                cache.hset(f"{db_name}|session", sid, b"pickled session")
                cache.hset(f"{db_name}|last_db_session_update", sid, last)
        bench = tmp_path / "frappe-bench"
        (bench / "sites" / "erp.example.org").mkdir(parents=True)
        (bench / "sites" / "erp.example.org" / "site_config.json").write_text(
            json.dumps({"db_name": db_name, "db_user": "root", "db_password": ""})
        )
        (bench / "sites" / "common_site_config.json").write_text(
            json.dumps({"redis_cache": REDIS_URL, "redis_queue": REDIS_URL})
        )
        config = tmp_path / "nachtwacht.yaml"
        config.write_text(
            f"site: erp\nstore:\n  url: sqlite:///{tmp_path / 'data' / 'nachtwacht.db'}\n"
            f'runbooks:\n  variant: frappe\n  vars: {{bench_path: "{bench}", '
            "frappe_site: erp.example.org}\n"
        )
        yield Site("erp.example.org", db_name, bench, config, cache)
    finally:
        cache.delete(f"{db_name}|session", f"{db_name}|last_db_session_update")
        cache.close()
        site_db.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{db_name}`"))
        admin.dispose()


def resolved(site: Site, **kw: str) -> fs.FrappeSite:
    return fs.resolve_site(load_config(site.config), **kw)


def nachtwacht_store(site: Site) -> Store:
    store = Store(load_config(site.config).store.url)
    store.migrate()
    return store


def test_the_site_is_found_from_the_bench_of_the_preset(site: Site) -> None:
    found = resolved(site)
    assert (found.name, found.db_name, found.redis_url) == (site.name, site.db_name, REDIS_URL)
    assert found.db_url.startswith("mysql+pymysql://root:@127.0.0.1:3306/")


def test_sessions_are_listed_newest_first_with_user_address_and_device(site: Site) -> None:
    rows = fs.list_sessions(resolved(site))
    assert [(r.user, r.ip, r.last_update, r.device) for r in rows] == [
        ("Administrator", "127.0.0.1", "2026-12-08 04:30:00", "desktop"),
        ("bob@example.org", "192.0.2.33", "2026-12-08 04:20:00", "desktop"),
        ("alice@example.org", "203.0.113.7", "2026-12-08 04:10:00", "desktop"),
        ("alice@example.org", "198.51.100.4", "2026-12-08 03:00:00", "mobile"),
    ]
    assert rows[0].sid_prefix == "adadadad"  # never the whole sid: it logs in as the user


def test_the_cli_lists_them_as_json_and_as_a_table(site: Site) -> None:
    out = CliRunner().invoke(sessions_app, ["sessions", "--json", "--config", str(site.config)])
    assert out.exit_code == 0, out.output
    assert [r["user"] for r in json.loads(out.output)][:2] == ["Administrator", "bob@example.org"]
    table = CliRunner().invoke(sessions_app, ["sessions", "--config", str(site.config)])
    assert table.exit_code == 0, table.output
    assert "bob@example.org" in table.output and "192.0.2.33" in table.output
    assert table.output.rstrip().endswith("4 session(s) on erp.example.org")


def test_ending_one_users_sessions_deletes_their_rows_and_cache_and_audits_it(
    site: Site,
) -> None:
    out = CliRunner().invoke(
        sessions_app,
        ["end-sessions", "--user", "alice@example.org", "--config", str(site.config)],
    )
    assert out.exit_code == 0, out.output
    assert out.output.strip() == (
        "ended 2 session(s) of alice@example.org on erp.example.org: alice@example.org (2)"
    )
    assert site.sids() == sorted(["b1" * 20, "ad" * 20])
    assert site.cached() == {"b1" * 20, "ad" * 20}
    store = nachtwacht_store(site)
    try:
        with store.connect() as conn:
            (entry,) = conn.execute(
                select(t.audit_log).where(t.audit_log.c.action == "frappe.sessions.end")
            ).mappings()
            assert entry["target"] == "erp.example.org user:alice@example.org"
            assert json.loads(entry["detail_json"])["cache_fields_deleted"] == 4
            assert auditchain.verify(conn).ok
    finally:
        store.dispose()


def test_ending_all_but_administrator_goes_on_the_incidents_timeline(site: Site) -> None:
    settings = load_config(site.config)
    store = nachtwacht_store(site)
    try:
        with store.begin() as conn:
            incident_id = incidents.open_incident(
                conn, settings, title="Break-in", severity=1, now=1.8e9, origin="declared"
            )
        out = CliRunner().invoke(
            sessions_app,
            [
                "end-sessions",
                "--all-but-administrator",
                "--incident",
                str(incident_id),
                "--json",
                "--config",
                str(site.config),
            ],
        )
        assert out.exit_code == 0, out.output
        assert json.loads(out.output)["users"] == {"alice@example.org": 2, "bob@example.org": 1}
        assert site.sids() == ["ad" * 20]
        assert site.cached() == {"ad" * 20}
        with store.connect() as conn:
            [event] = [e for e in incidents.timeline(conn, incident_id) if e["kind"] == "security"]
        assert event["message"] == (
            "ended 3 session(s) of every user but Administrator on erp.example.org: "
            "alice@example.org (2), bob@example.org (1)"
        )
    finally:
        store.dispose()


def test_an_unknown_incident_ends_nothing(site: Site) -> None:
    store = nachtwacht_store(site)
    try:
        with store.connect() as conn, pytest.raises(Problem, match="no incident 999"):
            fs.check_incident(conn, 999)
    finally:
        store.dispose()
    out = CliRunner().invoke(
        sessions_app,
        [
            "end-sessions",
            "--all-but-administrator",
            "--incident",
            "999",
            "--config",
            str(site.config),
        ],
    )
    assert out.exit_code != 0
    assert len(site.sids()) == 4 and len(site.cached()) == 4


def test_neither_or_both_of_user_and_all_is_refused(site: Site) -> None:
    for args in ([], ["--user", "bob@example.org", "--all-but-administrator"]):
        out = CliRunner().invoke(
            sessions_app, ["end-sessions", *args, "--config", str(site.config)]
        )
        assert out.exit_code == 2
        assert "give --user USER or --all-but-administrator" in out.output
    assert len(site.sids()) == 4


def test_a_cache_that_cannot_be_reached_is_said_and_the_rows_are_still_gone(site: Site) -> None:
    found = resolved(site, redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    ended = fs.end_sessions(found, user="bob@example.org")
    assert ended.users == {"bob@example.org": 1} and ended.cache_error
    assert "the cache was NOT cleared" in fs.describe(ended)
    assert "b1" * 20 not in site.sids()
    assert "b1" * 20 in site.cached()


def test_a_site_without_a_readable_config_is_a_clear_error(site: Site, tmp_path: Path) -> None:
    with pytest.raises(fs.SessionsError, match="cannot read .*site_config.json"):
        fs.resolve_site(load_config(site.config), "other.example.org")


def test_without_a_bench_the_presets_activity_log_source_gives_the_database(site: Site) -> None:
    """`init --frappe` also writes the site's database as a `frappe_activity` source."""
    url = resolved(site).db_url
    settings = SimpleNamespace(
        site="erp",
        runbooks=SimpleNamespace(vars={"bench_path": "/nonexistent", "frappe_site": site.name}),
        security=SimpleNamespace(sources=[SimpleNamespace(kind="frappe_activity", url=url)]),
    )
    found = fs.resolve_site(settings)
    assert (found.db_url, found.db_name, found.redis_url) == (url, site.db_name, None)
    ended = fs.end_sessions(found, user="bob@example.org")
    # the rows are gone, and it says that the cache, which it does not know, was not cleared
    assert ended.users == {"bob@example.org": 1}
    assert ended.cache_error == "no Redis cache is known for the site (give --redis-url)"
    assert "b1" * 20 in site.cached()


def test_a_process_killed_between_the_commit_and_the_cache_leaves_no_session_working(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault: the rows are committed gone, then the process dies before the cache is cleared;
    a second run finds no row to clear the cache for."""
    real = fs.clear_cache

    def dies_once_rows_are_gone(found: fs.FrappeSite, sids: list[str]) -> int:
        if "a1" * 20 not in site.sids():
            raise KeyboardInterrupt  # kill -9 stands in: nothing after this runs
        return real(found, sids)

    monkeypatch.setattr(fs, "clear_cache", dies_once_rows_are_gone)
    with pytest.raises(KeyboardInterrupt):
        fs.end_sessions(resolved(site), user="alice@example.org")
    assert "a1" * 20 not in site.sids()
    assert site.cached() == {"b1" * 20, "ad" * 20}  # alice's sessions no longer work
