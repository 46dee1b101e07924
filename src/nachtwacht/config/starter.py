"""Starter configs written by `nachtwacht init`: this host, or a Frappe bench.

Both are YAML text with comments, because the file is meant to be read and edited by the
operator; building a dict and dumping it would lose the explanations. Everything the text
depends on at run time (open ports, mounts, the bench's config files, the heartbeat token) is
detected in one place and can be passed in, so tests decide what was "found".
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import textwrap
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psutil

DOCS = "docs/configuration.md (keys) and docs/probes.md (probe kinds)"
SERVER_URL = "http://127.0.0.1:8080"
PORT_TIMEOUT = 0.3


@dataclass(frozen=True)
class LocalService:
    port: int
    name: str
    label: str
    component: str


# The services a small web stack runs, on their standard ports, in the order they are written.
LOCAL_SERVICES: tuple[LocalService, ...] = (
    LocalService(5432, "postgresql", "PostgreSQL", "database"),
    LocalService(3306, "mariadb", "MariaDB/MySQL", "database"),
    LocalService(6379, "redis", "Redis", "cache"),
    LocalService(80, "nginx-http", "nginx (HTTP)", "web"),
    LocalService(443, "nginx-https", "nginx (HTTPS)", "web"),
    LocalService(5672, "rabbitmq", "RabbitMQ", "queue"),
)

COMPONENTS: dict[str, str] = {
    "host": "This machine: disks, memory, CPU, load, swap and scheduled jobs",
    "database": "Database servers",
    "cache": "Redis",
    "web": "nginx and the sites behind it",
    "queue": "Message broker",
}

# Filesystems that hold no data of their own (or are read-only images, such as snaps): their
# "usage" is meaningless or always 100 %.
# fmt: off
PSEUDO_FILESYSTEMS = frozenset(
    {
        "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts",
        "devtmpfs", "efivarfs", "fusectl", "hugetlbfs", "iso9660", "mqueue", "nsfs", "overlay",
        "proc", "pstore", "ramfs", "rpc_pipefs", "securityfs", "squashfs", "sysfs", "tmpfs",
        "tracefs", "udf",
    }
)
# fmt: on
PSEUDO_PREFIXES = ("/proc", "/sys", "/dev", "/run", "/snap/", "/var/lib/docker/")


# --- detection ---------------------------------------------------------------------------------


def detect_mounts() -> list[str]:
    """Mount points of real filesystems, `/` first, each device once (bind mounts repeat it)."""
    mounts: list[str] = []
    devices: set[str] = set()
    try:
        partitions = psutil.disk_partitions(all=False)
    except OSError:
        partitions = []
    for part in partitions:
        point = part.mountpoint
        if part.fstype.lower() in PSEUDO_FILESYSTEMS or part.fstype.startswith("fuse."):
            continue
        if point != "/" and point.startswith(PSEUDO_PREFIXES):
            continue
        if part.device in devices and point != "/":
            continue
        devices.add(part.device)
        if point not in mounts:
            mounts.append(point)
    if "/" in mounts:
        mounts.remove("/")
    return ["/", *sorted(mounts)]


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = PORT_TIMEOUT) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def detect_open_ports(
    ports: Iterable[int], host: str = "127.0.0.1", timeout: float = PORT_TIMEOUT
) -> set[int]:
    """The ports that accept a TCP connection, tried in parallel so `init` stays quick."""
    wanted = list(ports)
    if not wanted:
        return set()
    with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
        results = pool.map(lambda p: port_accepts(p, host, timeout), wanted)
        return {port for port, ok in zip(wanted, results, strict=True) if ok}


# --- small YAML helpers ------------------------------------------------------------------------


def _q(value: str) -> str:
    """A double-quoted YAML scalar (JSON strings are valid YAML)."""
    return json.dumps(value, ensure_ascii=False)


def _sq(value: str) -> str:
    """A single-quoted YAML scalar: backslashes stay literal, which regexes need."""
    return "'" + value.replace("'", "''") + "'"


def _block(text: str, indent: int = 6) -> str:
    """A folded block scalar (`>-`) for long SQL: one readable line per clause."""
    pad = " " * indent
    return ">-\n" + "\n".join(pad + line for line in text.strip().splitlines())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "root"


def _header(title: str, lines: Sequence[str]) -> str:
    out = [
        f"# {title}",
        "#",
        "# This is a Nachtwacht configuration file, written by `nachtwacht init`. Every key is",
        f"# explained in {DOCS}.",
        "#",
        *[f"# {line}".rstrip() for line in lines],
        "#",
        "# Check it after every edit:   nachtwacht config validate -c <this file>",
        "# Start monitoring:            nachtwacht serve -c <this file>",
        "#",
        "# Durations are written 30s, 5m, 1h, 1d or 1h30m. `severity` is what a failing probe",
        "# pages with: 1 critical (respond within 15 min), 2 high, 3 medium. A failed check makes",
        "# a probe pending; it turns warning/critical when `retries` more checks fail in a row.",
        "",
    ]
    return "\n".join(out) + "\n"


def _common_settings(site: str) -> str:
    return f"""\
site: {_q(site)}
timezone: Europe/Amsterdam

# Office hours: paging policies and reports can treat them differently from nights/weekends.
# Quote the times: YAML reads an unquoted 17:00 as a number.
business_hours:
  days: [mon, tue, wed, thu, fri]
  start: "09:00"
  end: "17:00"
  holidays: []            # dates such as 2025-12-25

# Where results are kept. A relative sqlite path is relative to this file's directory.
# Several nachtwacht processes share postgresql+psycopg://user:pass@host/db instead.
store:
  url: sqlite:///data/nachtwacht.db

# The dashboard, the API and the heartbeat ping URLs listen here.
server:
  host: 127.0.0.1
  port: 8080

# How long measurements are kept: raw results, then per-minute and per-hour rollups.
retention:
  raw: 2d
  minute: 14d
  hour: 400d
  state_changes: 400d

"""


def _paging_example() -> str:
    """Who is paged and how, commented out: made-up addresses must never look like paging."""
    return """\
# --- who is paged, and how: NOBODY until this is filled in ---------------------------------
# Nobody is paged until a person and a channel that reaches them are configured.
# Until then /healthz and `nachtwacht status` say "degraded", the dashboard shows a banner
# and every incident's timeline says "NOT delivered". Uncomment both sections and fill them
# in (docs/people.md, docs/notifications.md); `config validate` warns about what is missing.
#
# The escalation matrix pages by role: oncall_engineer at once (repeated every 5 min, the
# backup from the third page), technical_lead at 15 min, management at 30 min, executives
# at 2 h. A role nobody holds is paged to nobody.
# people:
#   contacts:
#     - id: olga                  # lower case; rotations and `contact:olga` use it
#       name: Olga Oncall
#       roles: [oncall_engineer]
#       email: olga@example.org   # reached by `email` channels
#       phone: "+31 6 1234 5678"  # reached by `sms` channels (international form)
#       chat: "@olga"             # mentioned in chat channels
#       backup: tina              # paged as well when Olga does not acknowledge
#     - id: tina
#       name: Tina Techlead
#       roles: [technical_lead]
#       email: tina@example.org
#     - {id: mia, name: Mia Manager, roles: [management, executives], email: mia@example.org}
#
# A chat or webhook channel carries every page to the team; email and SMS reach each
# person at their own address. Check them without sending anything: `nachtwacht doctor`.
# notify:
#   channels:
#     mail:
#       kind: email
#       host: smtp.example.org
#       port: 587
#       username: nachtwacht@example.org
#       password: "EDIT"
#       sender: nachtwacht@example.org
#     team-chat:
#       kind: slack               # or mattermost, teams; `webhook` posts the whole message as JSON
#       url: https://hooks.slack.com/services/EDIT
#
# Pages carry an acknowledge link: the address responders open it at from their phones.
# Unset, it is this server's own address (server.host:port), which a phone cannot reach.
# incidents:
#   public_url: https://nachtwacht.example.org

"""


def _components(names: Iterable[str], descriptions: dict[str, str]) -> str:
    lines = [
        "# Probes are grouped into components on the dashboard and in incidents.",
        "components:",
    ]
    for name in names:
        lines.append(f"  {name}: {_q(descriptions.get(name, ''))}")
    return "\n".join(lines) + "\n\n"


def _host_probes(mounts: Sequence[str], *, frappe: bool = False) -> list[str]:
    """Disk per mount, memory, cpu, load and swap. The Frappe preset uses the original limits."""
    probes: list[str] = []
    used_names: set[str] = set()
    for mount in mounts:
        name = "disk-root" if mount == "/" else f"disk-{_slug(mount)}"
        while name in used_names:
            name += "-2"
        used_names.add(name)
        note = "  # the original system: disk > 90 % critical" if frappe else ""
        probes.append(
            f"""\
  - name: {name}
    kind: host
    metric: disk            # percent of the filesystem used
    mount: {_q(mount)}
    description: {_q(f"Space used on {mount}")}
    warn: 80
    critical: 90{note}
    interval: 5m            # disks fill slowly
    component: host
    severity: {1 if frappe else 2}
"""
        )
    if frappe:
        probes.append(
            """\
  - name: memory
    kind: host
    metric: memory          # percent of RAM used
    critical: 85            # the original system: memory > 85 % high
    retries: 3              # a short spike is not an incident
    component: host
    severity: 2
"""
        )
        probes.append(
            """\
  - name: cpu
    kind: host
    metric: cpu             # percent busy since the previous check
    critical: 80            # the original system: CPU > 80 % high
    retries: 5              # page only after 5 busy minutes in a row
    component: host
    severity: 2
"""
        )
        return probes
    probes.append(
        """\
  - name: memory
    kind: host
    metric: memory          # percent of RAM used
    warn: 85
    critical: 95
    retries: 3              # a short spike is not an incident
    component: host
    severity: 2
"""
    )
    probes.append(
        """\
  - name: cpu
    kind: host
    metric: cpu             # percent busy since the previous check
    warn: 80
    critical: 95
    retries: 5              # five busy minutes in a row, not one compile job
    component: host
    severity: 3
"""
    )
    probes.append(
        """\
  - name: load
    kind: host
    metric: load            # 1-minute load average per CPU core
    warn: 1.5
    critical: 3
    retries: 5
    component: host
    severity: 3
"""
    )
    probes.append(
        """\
  - name: swap
    kind: host
    metric: swap            # percent of swap used (0 on a machine without swap)
    warn: 50
    critical: 80
    component: host
    severity: 3
"""
    )
    return probes


# --- preset: this host -------------------------------------------------------------------------


def host_config(
    open_ports: Iterable[int] | None = None,
    mounts: Sequence[str] | None = None,
    token: str | None = None,
    hostname: str | None = None,
) -> str:
    """A commented config for this machine and the local services that answer on their ports.

    `open_ports`, `mounts`, `token` and `hostname` are detected when not given.
    """
    ports = (
        set(open_ports)
        if open_ports is not None
        else detect_open_ports(s.port for s in LOCAL_SERVICES)
    )
    mount_list = list(mounts) if mounts is not None else detect_mounts()
    token = token or secrets.token_urlsafe(18)
    site = hostname or socket.gethostname() or "this-host"
    found = [s for s in LOCAL_SERVICES if s.port in ports]

    found_text = ", ".join(f"{s.label} on port {s.port}" for s in found) or "none were found"
    header = _header(
        f"Nachtwacht starter configuration for {site}",
        [
            *textwrap.wrap(
                "It watches this machine (disks, memory, CPU, load, swap) and the local services "
                f"that answered when it was written: {found_text}.",
                88,
            ),
            "Lines marked `# EDIT:` need your attention before the probe can pass.",
        ],
    )
    component_names = ["host", *dict.fromkeys(s.component for s in found)]
    probes = [_section("this machine"), *_host_probes(mount_list), _heartbeat_example(token)]
    if found:
        probes.append(_section("local services that answered on their standard ports"))
        probes += [_service_probe(service) for service in found]
    probes.append(_self_probe_example())
    return (
        header
        + _common_settings(site)
        + _paging_example()
        + _components(component_names, COMPONENTS)
        + "probes:\n"
        + "\n".join(probes)
    )


def _section(title: str) -> str:
    """A comment line that heads a group of probes (joined to the next probe by a blank line)."""
    prefix = f"  # --- {title} "
    return prefix + "-" * max(3, 94 - len(prefix))


def _heartbeat_example(token: str) -> str:
    url = f"{SERVER_URL}/ping/{token}"
    return f"""\
  # A heartbeat turns silence into an alert: a job pings its URL when it finishes, and the probe
  # goes critical when no ping arrived within `period` + `grace`. A crontab line for a backup:
  #   30 2 * * *  /usr/local/bin/backup && curl -fsS -m 10 --retry 3 \\
  #               {url}
  # Add /start to the URL when the job begins (a job still running after `grace` is critical)
  # and /fail when it fails (critical at once). The token is a secret: keep it random.
  - name: nightly-backup
    kind: heartbeat
    description: "The nightly backup cron job reports in"
    token: {_q(token)}
    period: 1d              # expected once a day
    grace: 1h               # how late it may be before it counts as missed
    component: host
    severity: 2
    enabled: false          # pings are accepted already; set true once the cron line is in
"""


def _service_probe(service: LocalService) -> str:
    if service.name == "postgresql":
        return """\
  # EDIT: credentials. The probe connects as `postgres` without a password, which works only
  # with trust auth; create a monitoring role and put it in the URL:
  #   CREATE ROLE nachtwacht LOGIN PASSWORD 'secret';  -> postgresql+psycopg://nachtwacht:secret@...
  - name: postgresql
    kind: sql
    description: "PostgreSQL answers SELECT 1"
    url: postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    query: SELECT 1
    component: database
    severity: 1
"""
    if service.name == "mariadb":
        return """\
  # EDIT: credentials. `root` without a password rarely works over TCP (Debian's root uses the
  # unix socket); create a monitoring user with no privileges and put it in the URL:
  #   CREATE USER 'nachtwacht'@'127.0.0.1' IDENTIFIED BY 'secret';
  #   -> mysql+pymysql://nachtwacht:secret@127.0.0.1:3306/
  - name: mariadb
    kind: sql
    description: "MariaDB answers SELECT 1"
    url: mysql+pymysql://root@127.0.0.1:3306/
    query: SELECT 1
    component: database
    severity: 1
"""
    if service.name == "redis":
        return """\
  # PING; add `info_field: used_memory` with warn/critical to watch a number from INFO instead.
  - name: redis
    kind: redis
    description: "Redis answers PING"
    url: redis://127.0.0.1:6379/0
    component: cache
    severity: 2
"""
    return f"""\
  - name: {service.name}
    kind: tcp
    description: {_q(f"{service.label} accepts connections on port {service.port}")}
    host: 127.0.0.1
    port: {service.port}
    component: {service.component}
    severity: {1 if service.component == "web" else 2}
"""


def _self_probe_example() -> str:
    return f"""\
  # Nachtwacht's own health. A nachtwacht that is down cannot page about itself, so this probe
  # belongs in the config of a second nachtwacht on another machine (with this machine's address):
  # - name: nachtwacht
  #   kind: http
  #   url: {SERVER_URL}/healthz
  #   component: monitoring
  #   severity: 1
"""


# --- preset: a Frappe bench --------------------------------------------------------------------


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


def frappe_config(
    site: str,
    bench_path: Path,
    mounts: Sequence[str] | None = None,
) -> str:
    """A config reproducing the original in-app monitor's checks for one Frappe site."""
    facts = read_bench(site, bench_path)
    queries = frappe_queries()
    mount_list = list(mounts) if mounts is not None else detect_mounts()
    header = _header(
        f"Nachtwacht configuration for the Frappe site {site}",
        [
            f"Bench: {facts.bench_path}",
            "It reproduces the checks of the original in-app monitor (errors, timeouts, job queue,",
            "scheduler, dues processing, cache, API latency, host resources, database",
            "connections) as probes, with the original's thresholds and severities.",
            "",
            "This file contains the site's database password: keep it readable only by the user",
            "running nachtwacht (chmod 600), or point the URLs at a read-only monitoring user.",
            *(["", "Placeholders to fill in (search for `# EDIT:`):"] if facts.edits else []),
            *[
                line
                for e in facts.edits
                for line in textwrap.wrap(e, 86, initial_indent="- ", subsequent_indent="  ")
            ],
        ],
    )
    db_comment = (
        "  # EDIT: site_config.json was not readable: put the site's database user, password\n"
        "  # and name (db_name, db_password) in every `url:` below.\n"
        if facts.db_name == "EDIT_DB_NAME"
        else ""
    )
    if facts.db_type == "postgres":
        db_comment += (
            "  # EDIT: this site runs on PostgreSQL; the queries below are MariaDB SQL\n"
            "  # (backticks, INTERVAL 1 HOUR, TIMESTAMPDIFF, GLOBAL_STATUS): translate them.\n"
        )
    cache_edit = (
        "  # EDIT: redis_cache was not found in common_site_config.json; check the port.\n"
        if "redis_cache" in " ".join(facts.edits)
        else ""
    )
    queue_edit = (
        "  # EDIT: redis_queue was not found in common_site_config.json; check the port\n"
        "  # (here and in job-queue's command below).\n"
        if "redis_queue" in " ".join(facts.edits)
        else ""
    )
    monitor_line = (
        f"    enabled: false  # EDIT: enable after `bench --site {site} set-config monitor 1`\n"
        if facts.monitor_enabled is False
        else ""
    )
    command = queue_command(facts)
    command_yaml = "\n".join(f"      - {_q(arg)}" for arg in command)
    site_comp = {
        "site": f"The Frappe site {site}: web requests and API",
        "database": f"MariaDB database {facts.db_name}",
        "cache": "Frappe's Redis cache",
        "jobs": "Background jobs: the RQ queue, workers and the scheduler",
        "host": "This machine: disks, memory and CPU",
    }
    db = f"url: {_q(facts.db_url)}"

    probes = f"""\
probes:
  # --- the site ---------------------------------------------------------------------------
  # Frappe's own ping method: "pong" without logging in. Down or failing is an outage.
  - name: site-up
    kind: http
    url: {_q(facts.base_url + "/api/method/ping")}
    body_contains: pong
    component: site
    severity: 1
    retries: 2

  # The original: API latency ok below 1 s, degraded above 2 s (a performance problem: S2).
  - name: api-latency
    kind: http
    url: {_q(facts.base_url + "/api/method/ping")}
    body_contains: pong
    latency_warn: 1s
    latency_critical: 2s
    component: site
    severity: 2
    retries: 3
    depends_on: [site-up]

  # 5xx responses in Frappe's request log. Needs `monitor: 1` in the site's config, which
  # makes Frappe append one JSON line per request to logs/monitor.json.log (the pattern also
  # requires this site's name, as the log is shared by every site of the bench).
  - name: http-5xx
    kind: logfile
    path: {_q(str(facts.bench_path / "logs" / "monitor.json.log"))}
    pattern: {_sq(monitor_log_pattern(site))}
    window: 1h
    warn: 5
    critical: 10            # as the original's "errors > 10 per hour"
    component: site
    severity: 2
{monitor_line}
  # --- the database -----------------------------------------------------------------------
{db_comment}  # The original's "database round-trip time"; every SQL probe below depends on it.
  - name: database
    kind: sql
    {db}
    query: SELECT 1
    component: database
    severity: 1

  # The original: application errors in the last hour > 10 -> critical.
  # Frappe writes times in the site's time zone, MariaDB's NOW() is the server's: the
  # COALESCE(CONVERT_TZ(...)) below is "now" in the site's zone when MariaDB has time zone
  # tables (load them with mysql_tzinfo_to_sql), and plain NOW() otherwise.
  - name: errors-last-hour
    kind: sql
    {db}
    query: {_block(queries["errors-last-hour"])}
    critical: 10
    interval: 5m
    component: site
    severity: 1
    depends_on: [database]

  # The original: errors mentioning "timeout" in the last hour > 5 -> medium.
  - name: timeout-errors
    kind: sql
    {db}
    query: {_block(queries["timeout-errors"])}
    critical: 5
    interval: 5m
    component: site
    severity: 3
    depends_on: [database]

  # The original: database connections > 100. Threads_connected counts every client; the
  # PROCESSLIST table would show a user without the PROCESS privilege only its own connections.
  - name: db-connections
    kind: sql
    {db}
    query: {_block(queries["db-connections"])}
    warn: 80
    critical: 100
    component: database
    severity: 2
    depends_on: [database]

  # --- background jobs --------------------------------------------------------------------
  # The original: no scheduler activity for 30 minutes -> warning. Minutes since any scheduled
  # job last started. `tabScheduled Job Type.last_execution` is used rather than
  # `tabScheduled Job Log`, because Frappe writes no log rows for its every-few-minutes
  # ("All") jobs, so the log can be quiet for an hour on a healthy site.
  - name: scheduler-activity
    kind: sql
    {db}
    query: {_block(queries["scheduler-activity"])}
    warn: 30
    interval: 5m
    component: jobs
    severity: 2
    depends_on: [database]

  # The original: a daily scheduled job not run in 25 h -> critical. Hours since the
  # least recently run daily job started. A health check rather than an outage: S2.
  - name: daily-jobs
    kind: sql
    {db}
    query: {_block(queries["daily-jobs"])}
    critical: 25
    interval: 15m
    component: jobs
    severity: 2
    depends_on: [database]

  # The original: time since the last dues processing > 4 h warning, > 25 h critical.
  # Hours since a scheduled job whose name contains "dues" last completed (Frappe names a
  # Scheduled Job Type after the last two parts of its method, e.g. `tasks.process_dues`).
  # Delete this probe if the site runs no dues job; 999999 means "never completed".
  - name: dues-processing
    kind: sql
    {db}
    query: {_block(queries["dues-processing"])}
    warn: 4
    critical: 25
    interval: 15m
    component: jobs
    severity: 2
    depends_on: [database]

  # The queue the workers read. Without it no background job runs.
{queue_edit}  - name: redis-queue
    kind: redis
    url: {_q(facts.redis_queue)}
    component: jobs
    severity: 2

  # The original: queued background jobs > 20 -> medium. RQ keeps each queue as a Redis list,
  # so the number waiting is LLEN of the list; the redis probe reads only INFO fields, so a
  # command probe asks redis-cli (package redis-tools) to add up the lengths of the default,
  # short and long queues, under Frappe 14+ names (`<bench id>:<queue>`) and older plain names.
  - name: job-queue
    kind: command
    command:
{command_yaml}
    value_from: stdout
    critical: 20
    component: jobs
    severity: 3
    depends_on: [redis-queue]

  # --- cache ------------------------------------------------------------------------------
  # The original's cache round-trip. Frappe cannot serve pages without its cache.
{cache_edit}  - name: redis-cache
    kind: redis
    url: {_q(facts.redis_cache)}
    component: cache
    severity: 2

  # --- this machine -----------------------------------------------------------------------
"""
    probes += "\n".join(_host_probes(mount_list, frappe=True))
    return (
        header
        + _common_settings(site)
        + _paging_example()
        + _components(site_comp, site_comp)
        + probes
        + _frappe_extras(site, facts.bench_path)
    )


def _frappe_extras(site: str, bench: Path) -> str:
    """Runbooks, evidence and request metrics with this bench's paths."""
    return f"""
# Runbooks (docs/runbooks.md): the protocol's procedures with this bench's commands.
runbooks:
  variant: frappe
  vars:
    bench_path: {_q(str(bench))}
    frappe_site: {_q(site)}

# Evidence bundles (docs/evidence.md): the bench's logs and the site's config, passwords masked.
evidence:
  log_files: [{_q(str(bench / "logs" / "*.log"))}]
  config_files:
    - {_q(str(bench / "sites" / site / "site_config.json"))}
    - {_q(str(bench / "sites" / "common_site_config.json"))}

# Request latency and status codes from Frappe's monitor log (docs/frappe.md); the site's
# Error Log needs an API key: add it under errors.frappe_error_logs.
errors:
  frappe_monitor_logs:
    - name: {_q(site)}
      path: {_q(str(bench / "logs" / "monitor.json.log"))}
      site: {_q(site)}
"""
