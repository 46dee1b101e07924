"""`nachtwacht init --frappe` wires the site's logs into security monitoring (issue 17): the
site's Activity Log, the bench's nginx access log and auth.log where found, Administrator as
an admin account; the file validates."""

from __future__ import annotations

from pathlib import Path

import yaml

from nachtwacht.config import starter
from nachtwacht.config.frappe_bench import SecurityLogs, find_security_logs, host_timezone
from nachtwacht.config.loader import parse_config
from tests.test_cli_init import COMMON, SITE, SITE_CONFIG, make_bench


def test_the_preset_adds_the_sites_logins_nginx_and_auth_log(tmp_path: Path) -> None:
    bench = make_bench(tmp_path, SITE_CONFIG, COMMON)
    access = tmp_path / "site.access.log"
    access.touch()
    (bench / "config").mkdir()
    (bench / "config" / "nginx.conf").write_text(
        "server {\n  listen 80;\n  access_log /nonexistent/x.log;\n"
        f"  access_log {access} main;\n}}\n"
    )
    auth = tmp_path / "auth.log"
    auth.touch()
    logs = find_security_logs(bench, nginx_default=tmp_path / "none", auth_log=auth)
    assert (logs.nginx_access, logs.auth_log) == (str(access), str(auth))
    text = starter.frappe_config(SITE, bench, mounts=["/"], security_logs=logs)
    security = yaml.safe_load(text)["security"]
    assert security["admins"] == ["Administrator"]
    kinds = {s["name"]: s["kind"] for s in security["sources"]}
    assert kinds == {"site-logins": "frappe_activity", "nginx": "nginx", "ssh": "sshd"}
    settings = parse_config(text, "frappe.yaml")
    [site_logins] = [s for s in settings.security.sources if s.kind == "frappe_activity"]
    assert site_logins.url.startswith("mysql+pymysql://_5e5c0a1b2c:")
    assert settings.security.thresholds().admins == frozenset({"Administrator"})


def test_without_nginx_or_auth_log_only_the_activity_log(tmp_path: Path) -> None:
    bench = make_bench(tmp_path, SITE_CONFIG, COMMON)
    logs = find_security_logs(
        bench, nginx_default=tmp_path / "no", auth_log=tmp_path / "no", journald=tmp_path / "no"
    )
    assert (logs.nginx_access, logs.auth_log, logs.journal) == (None, None, False)
    text = starter.frappe_config(SITE, bench, mounts=["/"], security_logs=logs)
    settings = parse_config(text, "frappe.yaml")
    assert [s.kind for s in settings.security.sources] == ["frappe_activity"]
    # nginx's default log is taken when the bench's config names none
    default = tmp_path / "access.log"
    default.touch()
    assert find_security_logs(bench, nginx_default=default).nginx_access == str(default)


def test_on_postgres_without_logs_the_sources_are_empty_and_valid(tmp_path: Path) -> None:
    bench = make_bench(tmp_path, {**SITE_CONFIG, "db_type": "postgres"}, COMMON)
    text = starter.frappe_config(
        SITE, bench, mounts=["/"], security_logs=SecurityLogs(None, None, "UTC")
    )
    assert parse_config(text, "frappe.yaml").security.sources == []


def test_the_host_timezone_is_where_localtime_points(tmp_path: Path) -> None:
    link = tmp_path / "localtime"
    link.symlink_to("/usr/share/zoneinfo/Europe/Amsterdam")
    assert host_timezone(link) == "Europe/Amsterdam"
    assert host_timezone(tmp_path / "missing") == "UTC"


def test_init_proposes_the_journal_when_there_is_no_auth_log(tmp_path: Path) -> None:
    journald, auth, none = tmp_path / "run-journal", tmp_path / "auth.log", tmp_path / "none"
    journald.mkdir()

    def ssh_sources(text: str) -> list[tuple[str, str]]:
        sources = parse_config(text, "x.yaml").security.sources
        return [(s.kind, s.path) for s in sources if s.name == "ssh"]

    def host(auth_log: Path, journal: Path) -> str:
        return starter.host_config(
            open_ports=[], mounts=["/"], token="t" * 20, hostname="web1",
            auth_log=auth_log, journald=journal,
        )  # fmt: skip

    # this host: journald only → the journal; neither → no security section at all
    assert ssh_sources(host(none, journald)) == [("journal", "")]
    assert "systemd-journal" in host(none, journald)
    assert "security" not in yaml.safe_load(host(none, none))
    auth.touch()  # rsyslog writes auth.log: that file, as before
    assert ssh_sources(host(auth, journald)) == [("sshd", str(auth))]

    # the Frappe preset
    bench = make_bench(tmp_path, SITE_CONFIG, COMMON)
    for auth_log, journal, expected in (
        (none, journald, [("journal", "")]),
        (auth, journald, [("sshd", str(auth))]),
        (none, none, []),
    ):
        logs = find_security_logs(bench, nginx_default=none, auth_log=auth_log, journald=journal)
        text = starter.frappe_config(SITE, bench, mounts=["/"], security_logs=logs)
        assert ssh_sources(text) == expected
    # on PostgreSQL with the journal only, the journal is the one source
    pg = make_bench(tmp_path / "pg", {**SITE_CONFIG, "db_type": "postgres"}, COMMON)
    logs = find_security_logs(pg, nginx_default=none, auth_log=none, journald=journald)
    text = starter.frappe_config(SITE, pg, mounts=["/"], security_logs=logs)
    assert [s.kind for s in parse_config(text, "x.yaml").security.sources] == ["journal"]
