"""The Frappe preset's facts and checks: what `nachtwacht init --frappe` reads from a bench
(the site's database, the bench's Redis URLs and id), and the SQL, log pattern and command its
probes run (tests run them against real servers).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from nachtwacht.config.detect import AUTH_LOG, JOURNALD, detect_ssh_log


@dataclass
class BenchFacts:
    """What `frappe_config` read from the bench, and what it had to guess (`edits`)."""

    site: str
    bench_path: Path
    db_url: str
    db_name: str
    db_type: str
    redis_cache: str
    redis_queue: str
    bench_id: str
    base_url: str
    monitor_enabled: bool | None  # None: site_config.json was not readable
    edits: list[str] = field(default_factory=list)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_bench(site: str, bench_path: Path) -> BenchFacts:
    """Read the site's database and the bench's Redis URLs; placeholders for what is missing."""
    bench = Path(bench_path).expanduser().absolute()  # the logfile probe needs absolute paths
    site_conf = _read_json(bench / "sites" / site / "site_config.json")
    common = _read_json(bench / "sites" / "common_site_config.json")
    edits: list[str] = []
    conf: dict[str, Any] = {**(common or {}), **(site_conf or {})}  # site wins, as in Frappe

    db_type = str(conf.get("db_type") or "mariadb")
    if site_conf and site_conf.get("db_name") and site_conf.get("db_password") is not None:
        db_name = str(site_conf["db_name"])
        user = str(site_conf.get("db_user") or db_name)  # Frappe's user is named after the DB
        password = str(site_conf["db_password"])
        host = str(conf.get("db_host") or "127.0.0.1")
        default_port = 5432 if db_type == "postgres" else 3306
        port = int(conf.get("db_port") or default_port)
        scheme = "postgresql+psycopg" if db_type == "postgres" else "mysql+pymysql"
        db_url = (
            f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@{_url_host(host)}:{port}/{quote(db_name, safe='')}"
        )
    else:
        db_name = "EDIT_DB_NAME"
        db_url = "mysql+pymysql://EDIT_DB_USER:EDIT_DB_PASSWORD@127.0.0.1:3306/EDIT_DB_NAME"
        edits.append(
            f"{bench / 'sites' / site / 'site_config.json'} was not readable: fill in the "
            "database URLs (db_name and db_password from that file)"
        )

    redis_cache = _redis_url(common, "redis_cache")
    if redis_cache is None:
        redis_cache = "redis://127.0.0.1:13000"
        edits.append("redis_cache not found in common_site_config.json: check the cache's port")
    redis_queue = _redis_url(common, "redis_queue")
    if redis_queue is None:
        redis_queue = "redis://127.0.0.1:11000"
        edits.append("redis_queue not found in common_site_config.json: check the queue's port")
    elif common and common.get("rq_username") and common.get("rq_password"):
        # Frappe 15 can protect the queue with an ACL user (`bench create-rq-users`).
        redis_queue = _with_credentials(
            redis_queue, str(common["rq_username"]), str(common["rq_password"])
        )

    # Frappe 14+ names RQ queues `<bench id>:<queue>`; the id is the bench path with `/` as `-`.
    bench_id = str(conf.get("bench_id") or "")
    if not bench_id:
        bench_id = str(bench.resolve()).strip("/").replace("/", "-")

    host_name = str(conf.get("host_name") or "")
    base_url = host_name.rstrip("/") if host_name.startswith(("http://", "https://")) else ""
    if not base_url:
        base_url = f"https://{host_name or site}"

    monitor = None if site_conf is None else bool(conf.get("monitor"))
    return BenchFacts(
        site=site,
        bench_path=bench,
        db_url=db_url,
        db_name=db_name,
        db_type=db_type,
        redis_cache=redis_cache,
        redis_queue=redis_queue,
        bench_id=bench_id,
        base_url=base_url,
        monitor_enabled=monitor,
        edits=edits,
    )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _redis_url(conf: dict[str, Any] | None, key: str) -> str | None:
    value = (conf or {}).get(key)
    if isinstance(value, str) and value.startswith(("redis://", "rediss://", "unix://")):
        return value
    return None


def _with_credentials(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return url
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.netloc}"
    return urlunsplit(parts._replace(netloc=netloc))


# Frappe stores times in the site's time zone (System Settings), MariaDB's NOW() is in the
# server's. On a UTC server running a Europe/Amsterdam site the two differ by one or two hours,
# which would make every "in the last hour" count wrong. Convert NOW() to the site's zone when
# MariaDB has time zone tables (`mysql_tzinfo_to_sql`); CONVERT_TZ gives NULL without them, and
# then plain NOW() is used.
SITE_NOW = """COALESCE(
  CONVERT_TZ(NOW(), @@session.time_zone, (SELECT value FROM `tabSingles`
    WHERE doctype = 'System Settings' AND field = 'time_zone')),
  NOW())"""

QUEUES = ("default", "short", "long")
LLEN_SUM = "local n = 0 for _, k in ipairs(KEYS) do n = n + redis.call('LLEN', k) end return n"


def frappe_queries() -> dict[str, str]:
    """The MariaDB queries of the Frappe preset, by probe name (tests run them on a real server)."""
    return {
        "errors-last-hour": f"""
SELECT COUNT(*) FROM `tabError Log`
WHERE creation > {SITE_NOW} - INTERVAL 1 HOUR
""",
        "timeout-errors": f"""
SELECT COUNT(*) FROM `tabError Log`
WHERE (method LIKE '%timeout%' OR error LIKE '%timeout%')
AND creation > {SITE_NOW} - INTERVAL 1 HOUR
""",
        "scheduler-activity": f"""
SELECT COALESCE(TIMESTAMPDIFF(SECOND, MAX(last_execution), {SITE_NOW}) / 60, 999999)
FROM `tabScheduled Job Type` WHERE stopped = 0
""",
        "daily-jobs": f"""
SELECT COALESCE(TIMESTAMPDIFF(SECOND, MIN(last_execution), {SITE_NOW}) / 3600, 0)
FROM `tabScheduled Job Type`
WHERE stopped = 0 AND frequency IN ('Daily', 'Daily Long') AND last_execution IS NOT NULL
""",
        "dues-processing": f"""
SELECT COALESCE(TIMESTAMPDIFF(SECOND, MAX(creation), {SITE_NOW}) / 3600, 999999)
FROM `tabScheduled Job Log`
WHERE scheduled_job_type LIKE '%dues%' AND status = 'Complete'
""",
        "db-connections": """
SELECT CAST(VARIABLE_VALUE AS UNSIGNED) FROM information_schema.GLOBAL_STATUS
WHERE VARIABLE_NAME = 'THREADS_CONNECTED'
""",
    }


def monitor_log_pattern(site: str) -> str:
    """A regex for this site's 5xx lines in Frappe's logs/monitor.json.log.

    Frappe writes one JSON object per line with sorted keys, e.g.
    `{"duration":1234,"request":{...,"status_code":502},"site":"erp.example.org",...}`, so the
    request's status code always comes before the site. Older versions put a space after `:`.
    """
    return rf'"status_code":\s*5\d\d\b.*"site":\s*"{re.escape(site)}"'


def queue_command(facts: BenchFacts) -> list[str]:
    keys = [f"rq:queue:{facts.bench_id}:{q}" for q in QUEUES] + [f"rq:queue:{q}" for q in QUEUES]
    return ["redis-cli", "-u", facts.redis_queue, "--raw", "EVAL", LLEN_SUM, str(len(keys)), *keys]


@dataclass
class SecurityLogs:
    """The logs `init --frappe` wires into security monitoring (None: not found)."""

    nginx_access: str | None
    auth_log: str | None
    timezone: str  # the host's zone: sshd's syslog times and Frappe's `creation` are in it
    journal: bool = False  # no auth.log, but journald runs: sshd's logins are in the journal


NGINX_DEFAULT = Path("/var/log/nginx/access.log")
ACCESS_LOG = re.compile(r"^\s*access_log\s+(/[^\s;]+)", re.M)


def find_security_logs(
    bench_path: Path,
    nginx_default: Path = NGINX_DEFAULT,
    auth_log: Path = AUTH_LOG,
    localtime: Path = Path("/etc/localtime"),
    journald: Path = JOURNALD,
) -> SecurityLogs:
    """The bench's nginx access log (an `access_log` in its config/nginx.conf, written by
    `bench setup nginx`, else nginx's default), /var/log/auth.log (else the journal, when
    journald runs), the host's time zone: each only if it is there."""
    nginx: str | None = None
    try:
        conf = (bench_path / "config" / "nginx.conf").read_text(encoding="utf-8", errors="replace")
    except OSError:
        conf = ""
    for found in ACCESS_LOG.findall(conf):
        if Path(found).is_file():
            nginx = found
            break
    if nginx is None and nginx_default.is_file():
        nginx = str(nginx_default)
    ssh = detect_ssh_log(auth_log, journald)
    return SecurityLogs(
        nginx_access=nginx,
        auth_log=ssh.path if ssh is not None and ssh.kind == "sshd" else None,
        timezone=host_timezone(localtime),
        journal=ssh is not None and ssh.kind == "journal",
    )


def host_timezone(localtime: Path = Path("/etc/localtime")) -> str:
    """The IANA name /etc/localtime links to (…/zoneinfo/Europe/Amsterdam), else UTC."""
    try:
        target = str(localtime.resolve())
    except OSError:
        return "UTC"
    _, sep, name = target.partition("/zoneinfo/")
    if not sep or not name:
        return "UTC"
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return "UTC"
    return name
