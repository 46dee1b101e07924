"""`nachtwacht doctor`: check this installation, one line per check, ok / warn / fail / skip.

Nothing here writes: it parses the config, connects to the store without migrating it, reads
file sizes and free space, asks the store server (or an http probe's target) for the time, and
opens connections to the notification channels without sending anything (SMTP: connect and
EHLO, then QUIT; HTTP channels: a TCP connect to the host and port).

Why one module: each check is a short function of the one command, in the order `doctor`
prints them, over one `Check` type and one set of thresholds; the checks of other domains
(the audit chain, the spool, contacts, the firewall) are calls into those domains already.
"""

from __future__ import annotations

import functools
import shutil
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from http.client import HTTPException
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from nachtwacht.config.loader import link_warnings
from nachtwacht.config.masking import mask_url, mask_urls_in
from nachtwacht.config.schema import Settings
from nachtwacht.notify import reach
from nachtwacht.spool import status as spool_status
from nachtwacht.spool.drain import CURSOR_KEY
from nachtwacht.spool.log import backlog_on_disk, on_disk
from nachtwacht.store import auditchain
from nachtwacht.store.db import Store, StoreError

Level = Literal["ok", "warn", "fail", "skip"]
EXIT = {"ok": 0, "skip": 0, "warn": 1, "fail": 2}
GB = 1_000_000_000
DISK_WARN_FRACTION, DISK_WARN_BYTES, DISK_FAIL_FRACTION = 0.10, 1 * GB, 0.02
SKEW_WARN, SKEW_FAIL = 2.0, 60.0  # seconds
NET_TIMEOUT = 5.0


@dataclass
class Check:
    name: str
    level: Level
    message: str

    def line(self) -> str:
        return f"{self.level:<4}  {self.name:<18} {self.message}"


def exit_code(checks: list[Check]) -> int:
    return max((EXIT[c.level] for c in checks), default=0)


def as_json(checks: list[Check]) -> dict[str, Any]:
    worst = max(checks, key=lambda c: EXIT[c.level]).level if checks else "ok"
    return {"status": worst, "exit_code": exit_code(checks), "checks": [asdict(c) for c in checks]}


def run(settings: Settings, config_note: str) -> list[Check]:
    """Every check after the config parsed; the store checks share one connection attempt."""
    checks = [Check("config", "ok", config_note)]
    missing = sqlite_missing(settings.store.url)
    # never create an SQLite file (or its directory) just by looking for it
    store = Store(settings.store.url) if missing is None else None
    try:
        if store is None:
            reachable = Check("store", "fail", f"no SQLite database at {missing}")
            checks.append(reachable)
        else:
            reachable = _guard(checks, "store", lambda: check_store(store))
        ok = reachable.level == "ok"
        migrations = _guard(
            checks,
            "migrations",
            lambda: check_migrations(store) if ok and store is not None else _no_store(),
        )
        at_head = migrations.level == "ok"
        _guard(
            checks,
            "audit chain",
            lambda: check_audit_chain(store) if at_head and store is not None else _not_at_head(),
        )
        for label, path in (("disk data", settings.data_dir), ("disk spool", settings.spool_dir)):
            _guard(checks, label, functools.partial(check_disk, path))
        _guard(checks, "spool", lambda: check_spool(settings, store if ok else None))
        _guard(checks, "clock skew", lambda: check_clock(settings, store if ok else None))
        checks.extend(check_channels(settings))
        _guard(checks, "contacts", lambda: check_contacts(settings, store if ok else None))
        _guard(checks, "deadman", lambda: check_deadman(settings))
        if settings.security.respond.enabled:
            _guard(checks, "firewall", lambda: check_firewall(settings))
    finally:
        if store is not None:
            store.dispose()
    return checks


def sqlite_missing(url: str) -> Path | None:
    """The SQLite file a URL names when it does not exist (None: it does, or not SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else path.resolve()


def _guard(checks: list[Check], name: str, fn: Callable[[], Check]) -> Check:
    """A check that breaks is a failed check with its reason, not a traceback."""
    try:
        found = fn()
    except Exception as exc:  # noqa: BLE001 - reported as the check's failure
        found = Check(name, "fail", f"{exc.__class__.__name__}: {exc}"[:300])
    found.name = name
    checks.append(found)
    return found


def _no_store() -> Check:
    return Check("", "skip", "the store is not reachable")


# -- store ---------------------------------------------------------------------------------


def check_store(store: Store) -> Check:
    started = time.monotonic()
    try:
        with store.connect() as conn:
            conn.execute(text("SELECT 1"))
    except StoreError as exc:
        return Check("store", "fail", str(exc))
    ms = (time.monotonic() - started) * 1000
    return Check("store", "ok", f"{store.describe()} reachable ({ms:.0f} ms)")


def check_migrations(store: Store) -> Check:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from nachtwacht.store.migrate import alembic_config

    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    with store.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    if current == heads:
        return Check("migrations", "ok", f"at head ({', '.join(sorted(heads))})")
    if not current:
        return Check("migrations", "warn", "empty store: `nachtwacht serve` creates the tables")
    return Check(
        "migrations",
        "warn",
        f"store at {', '.join(sorted(current))}, code at {', '.join(sorted(heads))}: "
        "`nachtwacht serve` upgrades it at start (take a backup first)",
    )


def _not_at_head() -> Check:
    return Check("", "skip", "the store is not at this code's schema")


def check_audit_chain(store: Store) -> Check:
    """The audit log's hash chain (decision 28): a broken one names its first bad entry."""
    with store.connect() as conn:
        chain = auditchain.verify(conn)
    return Check("audit chain", "ok" if chain.ok else "fail", chain.describe())


# -- disk ----------------------------------------------------------------------------------


def check_disk(path: Path) -> Check:
    where = Path(path).resolve()
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return disk_level(str(where), usage.free, usage.total)


def disk_level(where: str, free: int, total: int) -> Check:
    fraction = free / total if total else 0.0
    text_ = f"{where}: {free / GB:.1f} GB free ({fraction:.0%} of {total / GB:.1f} GB)"
    if fraction < DISK_FAIL_FRACTION:
        return Check("disk", "fail", text_)
    if fraction < DISK_WARN_FRACTION or free < DISK_WARN_BYTES:
        return Check("disk", "warn", text_)
    return Check("disk", "ok", text_)


# -- spool ---------------------------------------------------------------------------------


def check_spool(settings: Settings, store: Store | None) -> Check:
    directory = settings.spool_dir
    cfg = settings.spool
    disk = on_disk(directory)
    cursor = None
    if store is not None:
        try:
            with store.connect() as conn:
                saved = store.get_meta(conn, CURSOR_KEY)
            cursor = (int(saved[0]), int(saved[1])) if saved else None
        except StoreError:
            store = None
    backlog = backlog_on_disk(directory, cursor) if store is not None else disk["bytes"]
    fill = disk["bytes"] / cfg.max_bytes
    parts = [
        f"{directory}: {spool_status.megabytes(backlog)} waiting, "
        f"{fill:.1%} of {spool_status.megabytes(cfg.max_bytes)} used"
    ]
    level: Level = "ok"
    serve = spool_status.read_state(directory, time.time())
    if serve is not None and not serve["stale"] and not serve["store"]["available"]:
        level = "fail"
        parts.append(f"serve reports the store DOWN since {serve['store']['down_since_iso']}")
    if serve is not None and not serve["stale"] and spool_status.failing(serve):
        level = "fail"
        parts.append(
            f"serve's spool cannot write: {serve['spool']['write_error']} "
            f"since {serve['spool']['write_error_since_iso']}"
        )
    if fill >= cfg.alarm_fill:
        level = "fail"
        parts.append(f"above the alarm level {cfg.alarm_fill:.0%}")
    if disk["dead"]:
        level = "fail" if level == "fail" else "warn"
        parts.append(f"{disk['dead']} rejected record(s) in {directory / 'dead'}")
    if backlog and level == "ok":
        level = "warn" if store is not None else "ok"
    return Check("spool", level, "; ".join(parts))


# -- clock ---------------------------------------------------------------------------------


def check_clock(settings: Settings, store: Store | None) -> Check:
    dialect = make_url(settings.store.url).get_backend_name()
    if dialect in ("postgresql", "mysql"):
        if store is None:
            return Check("clock skew", "skip", "the store is not reachable")
        query = (
            "SELECT extract(epoch from clock_timestamp())"
            if dialect == "postgresql"
            else "SELECT UNIX_TIMESTAMP(NOW(6))"
        )
        with store.connect() as conn:
            before = time.time()
            server = float(conn.execute(text(query)).scalar_one())
            after = time.time()
        return skew_level(server - (before + after) / 2, (after - before) / 2, "the store server")
    target = next(
        (str(p.url) for p in settings.probes if p.kind == "http" and hasattr(p, "url")), None
    )
    if target is None:
        return Check(
            "clock skew",
            "skip",
            "SQLite has no server clock and no http probe is configured to compare with",
        )
    before = time.time()
    shown = mask_url(target)  # the query may be a signature; doctor's output gets pasted
    try:
        date = _head_date(target)
    except (OSError, ValueError, HTTPException) as exc:
        return Check(
            "clock skew", "skip", f"cannot ask {shown} for the time: {mask_urls_in(str(exc))}"
        )
    after = time.time()
    if not date:
        return Check("clock skew", "skip", f"{shown} sends no Date header")
    server = parsedate_to_datetime(date).timestamp()
    # the Date header has whole seconds: it is up to 1 s behind the moment it was written
    return skew_level(server + 0.5 - (before + after) / 2, (after - before) / 2 + 0.5, shown)


def _head_date(url: str) -> str | None:
    """The Date header of a HEAD answer, whatever its status (a 404 still tells the time)."""
    import urllib.error
    import urllib.request

    # only the time is read: an unverified certificate cannot mislead it more than a verified one
    context = ssl._create_unverified_context()

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(
        NoRedirect(), urllib.request.HTTPSHandler(context=context), urllib.request.ProxyHandler({})
    )
    request = urllib.request.Request(url, method="HEAD")
    try:
        with opener.open(request, timeout=NET_TIMEOUT) as response:
            return response.headers.get("date")
    except urllib.error.HTTPError as exc:
        return exc.headers.get("date")


def skew_level(skew: float, error: float, against: str) -> Check:
    text_ = f"{skew:+.3f} s against {against} (±{error:.3f} s)"
    excess = abs(skew) - error
    if excess > SKEW_FAIL:
        return Check("clock skew", "fail", text_ + ": SLA timers and timelines will be wrong")
    if excess > SKEW_WARN:
        return Check("clock skew", "warn", text_ + ": is NTP running?")
    return Check("clock skew", "ok", text_)


# -- channels ------------------------------------------------------------------------------


def check_channels(settings: Settings) -> list[Check]:
    configured = settings.notify.channels
    # the same verdict /healthz, `status` and the dashboard give
    problems = reach.paging_problems(settings)
    if not configured:
        return [Check("channels", "warn", "; ".join(problems))]
    out = []
    for name, cfg in configured.items():
        label = f"channel {name}"
        try:
            found = smtp_reachable(cfg) if cfg.kind == "email" else tcp_reachable(str(cfg.url))
        except Exception as exc:  # noqa: BLE001 - one line per channel
            found = Check(label, "fail", f"{exc.__class__.__name__}: {exc}"[:300])
        found.name = label
        out.append(found)
    if problems:
        out.append(Check("paging", "warn", "; ".join(problems)))
    # the same words as `config validate`: an ack link a phone cannot open
    out.extend(Check("ack links", "warn", message) for _, message in link_warnings(settings))
    return out


def check_contacts(settings: Settings, store: Store | None) -> Check:
    """Channels whose confirm link was never followed, or long ago (oncall/verify.py)."""
    from nachtwacht.oncall import verify

    if store is None:
        return Check("", "skip", "the store is not reachable")
    try:
        with store.connect() as conn:
            entries = verify.state(conn, settings, time.time())
    except SQLAlchemyError:
        return Check("", "skip", "the store is not migrated yet (`nachtwacht serve` does it)")
    if not entries:
        return Check("", "skip", "no channel reaches a contact personally")
    missing = verify.problems(entries)
    if missing:
        try:
            verify.base_url(settings)
            how = "nachtwacht contacts verify"
        except verify.VerifyError as exc:
            how = f"confirm links cannot be sent yet: {exc.message}"
        return Check(
            "",
            "warn",
            f"{len(missing)} of {len(entries)} not verified: " + "; ".join(missing) + f" ({how})",
        )
    return Check("", "ok", f"all {len(entries)} contact channels verified")


def smtp_reachable(cfg: Any) -> Check:
    where = f"smtp {cfg.host}:{cfg.port}"
    timeout = min(float(cfg.timeout), NET_TIMEOUT)
    try:
        if cfg.ssl:
            context = ssl.create_default_context()
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                cfg.host, cfg.port, timeout=timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=timeout)
        with smtp:
            code, banner = smtp.ehlo()
            if code != 250:
                return Check("", "fail", f"{where}: EHLO answered {code}")
            if cfg.starttls and not cfg.ssl and not smtp.has_extn("starttls"):
                return Check("", "fail", f"{where}: STARTTLS is configured but not offered")
    except (OSError, smtplib.SMTPException) as exc:
        return Check("", "fail", f"{where}: {exc or exc.__class__.__name__}")
    first = banner.decode(errors="replace").splitlines()[0] if banner else ""
    return Check("", "ok", f"{where}: EHLO ok ({first})")


def tcp_reachable(url: str) -> Check:
    from urllib.parse import urlsplit

    parsed = urlsplit(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    host = parsed.hostname or ""
    where = f"{host}:{port}"
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=NET_TIMEOUT):
            pass
    except OSError as exc:
        return Check("", "fail", f"{where}: cannot connect: {exc.strerror or exc}")
    ms = (time.monotonic() - started) * 1000
    return Check("", "ok", f"{where}: TCP connect ok ({ms:.0f} ms; nothing sent)")


def check_deadman(settings: Settings) -> Check:
    url = settings.watchdog.deadman_url
    if url is None:
        return Check(
            "deadman", "skip", "no watchdog.deadman_url: nobody notices if Nachtwacht dies"
        )
    found = tcp_reachable(str(url))
    found.message += f"; pinged every {settings.watchdog.deadman_interval:g} s by serve"
    return found


def check_firewall(settings: Settings) -> Check:
    """With security responses on: can `nft` be run here, and what does our table hold."""
    from nachtwacht.security.blocks import firewall_for
    from nachtwacht.security.firewall import FirewallError

    firewall = firewall_for(settings.security.respond)
    try:
        blocked = firewall.elements("block")
        ports = firewall.elements("port")
    except FirewallError as exc:
        return Check("firewall", "fail", f"{exc} (security.respond needs nft and CAP_NET_ADMIN)")
    lockdown = f"; lockdown on ports {', '.join(sorted(ports))}" if ports else ""
    return Check("firewall", "ok", f"nft runs; {len(blocked)} blocked in inet nachtwacht{lockdown}")
