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
    logs = find_security_logs(bench, nginx_default=tmp_path / "no", auth_log=tmp_path / "no")
    assert (logs.nginx_access, logs.auth_log) == (None, None)
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
