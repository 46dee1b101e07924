"""The `{{ variables }}` of runbooks: built-ins derived from the config, then the user's.

Built-ins come from what the config already says: the site, the database the `sql` probes
watch (its URL split into host, port, user, password, name), the systemd units the `service`
probes watch, the first `http` probe's URL. `runbooks.vars` override them, `secret_vars` add
values that are never shown, and a runbook's `inputs` are given when it runs.

Secrets are masked whenever text is shown or stored: in a dry run, a step's recorded output,
the timeline. A command gets the real values only in the moment it runs.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from nachtwacht.config.masking import MASK, is_secret_key, mask_url
from nachtwacht.config.redact import settings_secrets
from nachtwacht.config.redactor import Redactor, secrets_in
from nachtwacht.runbooks.loader import VARIABLE
from nachtwacht.runbooks.models import Input, Runbook

# what an input given at run time may hold: an address, a name, a path; no spaces, quotes or
# shell operators, because it is pasted into a shell command. Matched with fullmatch: `$` of
# re.match lets a trailing newline through, and a newline ends a shell command.
SAFE_INPUT = re.compile(r"[A-Za-z0-9_.:/@%+=,\-]*")
# an input with no `type:` is typed by its name, so `block_ip` gets the network checks
NETWORK_NAME = re.compile(r"(?:^|_)(?:ip|ips|addr|address|cidr|net|network|subnet)$", re.I)
PATH_NAME = re.compile(r"(?:^|_)(?:path|file|dir|directory|folder)$", re.I)
# the broadest network an input may name: blocking a /0 (or a /1) locks everyone out,
# the responder included
MIN_PREFIX = {4: 16, 6: 32}
WEB_UNITS = ("nginx", "apache", "httpd", "caddy", "haproxy")
DB_UNITS = ("mariadb", "mysql", "postgres")
CACHE_UNITS = ("redis",)
DEFAULT_BENCH = "/home/frappe/frappe-bench"
# the built-ins and what they mean, for `runbook show` and docs/runbooks.md
BUILTIN_HELP: dict[str, str] = {
    "site": "the site's name (`site:` of the config)",
    "frappe_site": "the Frappe site (default: `site`)",
    "bench_path": f"the bench directory (default {DEFAULT_BENCH})",
    "bench": "the bench command (default `bench`; e.g. `sudo -u frappe -H bench`)",
    "sudo": "the privilege prefix for systemctl (default `sudo -n`; '' as root)",
    "web_service": "the web server's unit (from `service` probes, default nginx)",
    "db_service": "the database's unit (from `service` probes, default mariadb/postgresql)",
    "cache_service": "the cache's unit (default redis-server)",
    "app_services": "other units of `service` probes: the application (may be empty)",
    "site_url": "the first `http` probe's URL (default http://localhost/)",
    "nachtwacht_url": "incidents.public_url",
    "nachtwacht": "the nachtwacht command (default: the one beside this Python, else from PATH)",
    "database_url": "the first `sql` probe's URL (secret parts masked)",
    "db_kind": "mysql, postgresql, sqlite or empty",
    "db_host": "from database_url",
    "db_port": "from database_url",
    "db_user": "from database_url",
    "db_password": "from database_url (secret)",
    "db_name": "from database_url",
    "store_url": "Nachtwacht's own store (secret parts masked)",
    "log_dir": "/var/log",
    "app_log_dir": "the application's logs (bench_path/logs for Frappe, else /var/log)",
    "mysql_error_log": "/var/log/mysql/error.log",
    "backup_file": "the backup a restore reads (default /var/backups/latest-db-backup.sql)",
    "http_port": "the port external access is closed on in a security incident (80)",
    "data_dir": "Nachtwacht's data directory",
    "evidence_dir": "where evidence bundles go",
    "variant": "systemd or frappe",
    "incident_id": "the incident the run belongs to (empty for a run without one)",
}


class VariableError(ValueError):
    def __init__(self, message: str, field: str = "vars") -> None:
        super().__init__(message)
        self.field = field


@dataclass
class Variables:
    values: dict[str, str]
    secret: set[str] = field(default_factory=set)  # names never shown
    redactor: Redactor = field(default_factory=Redactor)
    inputs: set[str] = field(default_factory=set)  # given at run time: quoted into commands

    def shown(self, name: str) -> str:
        value = self.values[name]
        if name in self.secret:
            return MASK if value else ""
        return self.redactor.text(mask_url(value))

    def render(self, text: str, *, masked: bool, shell: bool = False) -> str:
        """`{{ name }}` replaced by the value, or by what may be shown of it. `shell`: the text
        is a shell command, and inputs go in quoted. The config's own variables do not: they
        are written by whoever writes the config, and some are meant as command fragments
        (`sudo: sudo -n`)."""

        def one(m: re.Match[str]) -> str:
            name = m[1]
            if name not in self.values:
                raise VariableError(f"unknown variable '{name}'")
            value = self.shown(name) if masked else self.values[name]
            return shlex.quote(value) if shell and name in self.inputs else value

        return VARIABLE.sub(one, text)

    def redact(self, text: str) -> str:
        return self.redactor.text(text)

    def unmet(self, condition: str) -> str:
        """Why a condition does not hold, in words: `db_kind is not postgresql`."""
        name, eq, wanted = condition.partition("=")
        return f"{name.strip()} is not {wanted.strip()}" if eq else f"{name.strip()} is not set"

    def is_set(self, condition: str) -> bool:
        """`name` (set and not empty) or `name=value`."""
        name, eq, wanted = condition.partition("=")
        value = self.values.get(name.strip(), "")
        return value == wanted.strip() if eq else bool(value)


def _database(settings: Any) -> str:
    sql = [
        p for p in settings.probes if p.kind == "sql" and isinstance(getattr(p, "url", None), str)
    ]
    sql.sort(key=lambda p: p.component != "database")  # the database component's first
    for probe in sql:
        if probe.url.startswith(("mysql", "postgresql", "mariadb")):
            return probe.url
    url = settings.store.url
    return "" if url.startswith("sqlite") else url


def _db_parts(url: str) -> dict[str, str]:
    parts = {"db_kind": "", "db_host": "", "db_port": "", "db_user": "", "db_password": ""}
    parts["db_name"] = ""
    if not url:
        return parts
    try:
        parsed = make_url(url)
    except Exception:  # an unparsable URL leaves the parts empty; the probe says why
        return parts
    backend = parsed.get_backend_name()
    kind = {"mysql": "mysql", "mariadb": "mysql", "postgresql": "postgresql"}.get(backend, backend)
    default_port = {"mysql": "3306", "postgresql": "5432"}.get(kind, "")
    return {
        "db_kind": kind,
        "db_host": parsed.host or "127.0.0.1",
        "db_port": str(parsed.port or default_port),
        "db_user": parsed.username or "",
        "db_password": parsed.password or "",
        "db_name": parsed.database or "",
    }


def _units(settings: Any, db_kind: str) -> dict[str, str]:
    units = [p.unit for p in settings.probes if p.kind == "service" and getattr(p, "unit", None)]
    web = next((u for u in units if any(w in u for w in WEB_UNITS)), "nginx")
    default_db = "postgresql" if db_kind == "postgresql" else "mariadb"
    db = next((u for u in units if any(d in u for d in DB_UNITS)), default_db)
    cache = next((u for u in units if any(c in u for c in CACHE_UNITS)), "redis-server")
    apps = [u for u in units if u not in (web, db, cache)]
    return {
        "web_service": web,
        "db_service": db,
        "cache_service": cache,
        "app_services": " ".join(dict.fromkeys(apps)),
    }


def nachtwacht_command() -> str:
    """The running installation's command: a systemd unit's PATH rarely holds its venv."""
    beside = Path(sys.executable).with_name("nachtwacht")
    return str(beside) if beside.is_file() else "nachtwacht"


def builtins(settings: Any) -> dict[str, str]:
    cfg = settings.runbooks
    bench_path = cfg.vars.get("bench_path", DEFAULT_BENCH)
    database_url = _database(settings)
    db = _db_parts(database_url)
    http = next((p for p in settings.probes if p.kind == "http"), None)
    evidence_dir = settings.evidence.directory(settings.data_dir)
    return {
        "site": settings.site,
        "frappe_site": settings.site,
        "bench_path": bench_path,
        "bench": "bench",
        "sudo": "sudo -n",
        **_units(settings, db["db_kind"]),
        "site_url": str(http.url) if http is not None else "http://localhost/",
        "nachtwacht_url": settings.incidents.public_url.rstrip("/"),
        "nachtwacht": nachtwacht_command(),
        "database_url": database_url,
        **db,
        "store_url": settings.store.url,
        "log_dir": "/var/log",
        "app_log_dir": f"{bench_path}/logs" if cfg.variant == "frappe" else "/var/log",
        "mysql_error_log": "/var/log/mysql/error.log",
        "backup_file": "/var/backups/latest-db-backup.sql",
        "http_port": "80",
        "data_dir": str(settings.data_dir),
        "evidence_dir": str(evidence_dir),
        "variant": cfg.variant,
        "incident_id": "",
    }


def known_names(settings: Any) -> set[str]:
    cfg = settings.runbooks
    return set(BUILTIN_HELP) | set(cfg.vars) | set(cfg.secret_vars)


def variables(
    settings: Any,
    runbook: Runbook | None = None,
    given: dict[str, str] | None = None,
    incident_id: int | None = None,
) -> Variables:
    """Every variable for one run; VariableError names a missing or unsafe input."""
    cfg = settings.runbooks
    values = builtins(settings) | dict(cfg.vars) | dict(cfg.secret_vars)
    # the run's own, never the config's
    values["incident_id"] = str(incident_id) if incident_id is not None else ""
    given = dict(given or {})
    inputs = runbook.inputs if runbook is not None else {}
    unknown = sorted(set(given) - set(inputs))
    if unknown:
        allowed = ", ".join(sorted(inputs)) or "none"
        raise VariableError(f"unknown input {', '.join(unknown)}; this runbook takes: {allowed}")
    for name, spec in inputs.items():
        value = given.get(name, spec.default)
        if value is None:
            raise VariableError(f"input '{name}' is required: {spec.description or name}", name)
        problem = check_input(input_type(name, spec), value)
        if problem is not None:
            raise VariableError(f"input '{name}' {problem}", name)
        values[name] = value
    secret = set(cfg.secret_vars) | {"db_password"} | {n for n in values if is_secret_key(n)}
    known = {values[n] for n in secret if values.get(n)}
    known |= settings_secrets(settings)
    for value in values.values():
        known.update(secrets_in(value))
    return Variables(values=values, secret=secret, redactor=Redactor(known), inputs=set(inputs))


def input_type(name: str, spec: Input) -> str:
    if spec.type is not None:
        return spec.type
    if NETWORK_NAME.search(name):
        return "network"
    if PATH_NAME.search(name):
        return "path"
    return "text"


def check_input(kind: str, value: str) -> str | None:
    """Why a value given for an input of this type is refused, or None. Empty is allowed: it
    means "not given" (`if_var` skips the steps that need it)."""
    if not SAFE_INPUT.fullmatch(value):
        return "may hold letters, digits and . : / @ % + = , - _ only (it goes into shell commands)"
    if not value:
        return None
    if value.startswith("-"):
        return "may not start with - (a command would read it as an option)"
    if kind in ("address", "network"):
        return _check_network(kind, value)
    if ".." in value:
        return "may not contain .. (it could name something outside where it should)"
    if kind == "name" and "/" in value:
        return "is a name and may not contain /"
    if kind == "text" and "/" in value and _is_network(value):
        # a network given to an untyped input is held to the same bound
        return _check_network("network", value)
    return None


def _is_network(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _check_network(kind: str, value: str) -> str | None:
    try:
        network = (
            ipaddress.ip_network(value, strict=False)
            if kind == "network"
            else ipaddress.ip_network(ipaddress.ip_address(value))
        )
    except ValueError:
        what = "an IP address or network (203.0.113.9, 203.0.113.0/24)"
        return f"is not {what if kind == 'network' else 'an IP address'}"
    prefix, version = network.prefixlen, network.version
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped:
        prefix, version = prefix - 96, 4  # ::ffff:0.0.0.0/96 is every IPv4 address
    if network.network_address.is_unspecified and network.num_addresses == 1:
        return "is the unspecified address (0.0.0.0 or ::), which means everyone"
    if prefix < MIN_PREFIX[version]:
        return (
            f"is too broad: a network of at most /{MIN_PREFIX[version]} for IPv{version} "
            "(blocking more would lock everyone out)"
        )
    return None
