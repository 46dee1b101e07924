"""Starter configs written by `nachtwacht init`: this host, or a Frappe bench.

Both are YAML text with comments, because the file is meant to be read and edited by the
operator; building a dict and dumping it would lose the explanations. The text is in Jinja2
templates (config/templates/*.yaml.j2, shipped as package data); this module decides what goes
in them. What the text depends on at run time (open ports and mounts: config/detect.py; the
bench's config files: config/frappe_bench.py; the heartbeat token) is found in one place and can be
passed in, so tests decide what was "found".
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from nachtwacht.config.detect import (
    AUTH_LOG,
    JOURNALD,
    LOCAL_SERVICES,
    detect_mounts,
    detect_open_ports,
    detect_ssh_log,
)
from nachtwacht.config.frappe_bench import (
    SecurityLogs,
    find_security_logs,
    frappe_queries,
    host_timezone,
    monitor_log_pattern,
    queue_command,
    read_bench,
)

DOCS = "docs/configuration.md (keys) and docs/probes.md (probe kinds)"
SERVER_URL = "http://127.0.0.1:8080"

COMPONENTS: dict[str, str] = {
    "host": "This machine: disks, memory, CPU, load, swap and scheduled jobs",
    "database": "Database servers",
    "cache": "Redis",
    "web": "nginx and the sites behind it",
    "queue": "Message broker",
}


# --- small YAML helpers, the templates' filters -------------------------------------------------


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


def _section(title: str) -> str:
    """A comment line that heads a group of probes."""
    prefix = f"  # --- {title} "
    return prefix + "-" * max(3, 94 - len(prefix))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "root"


# block tags take their own newline and indentation with them: the text between them is the YAML
_TEMPLATES = Environment(
    loader=PackageLoader("nachtwacht.config", "templates"),
    autoescape=False,  # YAML, not HTML: the filters quote
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    undefined=StrictUndefined,
)
_TEMPLATES.filters.update(q=_q, sq=_sq, block=_block, section=_section)


def _render(name: str, **values: Any) -> str:
    return _TEMPLATES.get_template(name).render(docs=DOCS, server_url=SERVER_URL, **values)


def _disks(mounts: Sequence[str]) -> list[tuple[str, str]]:
    """(probe name, mount) per mount: `disk-root`, `disk-<slug>`, made unique."""
    disks: list[tuple[str, str]] = []
    used_names: set[str] = set()
    for mount in mounts:
        name = "disk-root" if mount == "/" else f"disk-{_slug(mount)}"
        while name in used_names:
            name += "-2"
        used_names.add(name)
        disks.append((name, mount))
    return disks


# --- preset: this host -------------------------------------------------------------------------


def host_config(
    open_ports: Iterable[int] | None = None,
    mounts: Sequence[str] | None = None,
    token: str | None = None,
    hostname: str | None = None,
    auth_log: Path = AUTH_LOG,
    journald: Path = JOURNALD,
    localtime: Path = Path("/etc/localtime"),
) -> str:
    """A commented config for this machine and the local services that answer on their ports,
    and sshd's logins as a security source (auth.log, else the journal) where found.

    `open_ports`, `mounts`, `token` and `hostname` are detected when not given; tests point
    `auth_log`, `journald` and `localtime` at their own files.
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
    header_lines = [
        *textwrap.wrap(
            "It watches this machine (disks, memory, CPU, load, swap) and the local services "
            f"that answered when it was written: {found_text}.",
            88,
        ),
        "Lines marked `# EDIT:` need your attention before the probe can pass.",
    ]
    return _render(
        "host.yaml.j2",
        title=f"Nachtwacht starter configuration for {site}",
        header_lines=header_lines,
        site=site,
        component_names=["host", *dict.fromkeys(s.component for s in found)],
        descriptions=COMPONENTS,
        disks=_disks(mount_list),
        token=token,
        found=found,
        ssh_log=detect_ssh_log(auth_log, journald),
        timezone=host_timezone(localtime),
    )


# --- preset: a Frappe bench --------------------------------------------------------------------


def frappe_config(
    site: str,
    bench_path: Path,
    mounts: Sequence[str] | None = None,
    security_logs: SecurityLogs | None = None,
) -> str:
    """A config reproducing the original in-app monitor's checks for one Frappe site, and
    security monitoring of its logins and logs (`security_logs` found when not given)."""
    facts = read_bench(site, bench_path)
    mount_list = list(mounts) if mounts is not None else detect_mounts()
    logs = security_logs if security_logs is not None else find_security_logs(facts.bench_path)
    header_lines = [
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
    ]
    edits = " ".join(facts.edits)
    return _render(
        "frappe.yaml.j2",
        title=f"Nachtwacht configuration for the Frappe site {site}",
        header_lines=header_lines,
        site=site,
        components={
            "site": f"The Frappe site {site}: web requests and API",
            "database": f"MariaDB database {facts.db_name}",
            "cache": "Frappe's Redis cache",
            "jobs": "Background jobs: the RQ queue, workers and the scheduler",
            "host": "This machine: disks, memory and CPU",
        },
        bench=str(facts.bench_path),
        logs=str(facts.bench_path / "logs" / "*.log"),
        site_config=str(facts.bench_path / "sites" / site / "site_config.json"),
        common_config=str(facts.bench_path / "sites" / "common_site_config.json"),
        base_url=facts.base_url,
        monitor_log=str(facts.bench_path / "logs" / "monitor.json.log"),
        monitor_pattern=monitor_log_pattern(site),
        monitor_off=facts.monitor_enabled is False,
        db_url=facts.db_url,
        db_missing=facts.db_name == "EDIT_DB_NAME",
        postgres=facts.db_type == "postgres",
        queries=frappe_queries(),
        redis_queue=facts.redis_queue,
        queue_missing="redis_queue" in edits,
        command=queue_command(facts),
        redis_cache=facts.redis_cache,
        cache_missing="redis_cache" in edits,
        disks=_disks(mount_list),
        nginx_log=logs.nginx_access,
        auth_log=logs.auth_log,
        journal=logs.journal,
        timezone=logs.timezone,
    )
