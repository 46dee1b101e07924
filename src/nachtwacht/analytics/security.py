"""enable_security_logging: a security log of authentications, refusals and admin changes.

`log_request` is a hook of the app's response-status middleware (web/status.py). While the
flag is on it writes one JSON line per request that

- was refused for authentication or authorisation (401, 403: a wrong or revoked token, a
  missing login, a role too low): `auth.failure`, level WARNING; for a missing or wrong CSRF
  token (of a session or of the login form): `csrf.failure`, level WARNING;
- posted to /login: `login.success` / `login.failure` (the username is in the audit log);
- an admin made and that changed something (not GET/HEAD/OPTIONS, answered below 400):
  `admin.action`, level INFO;
- any other request of a logged-in user or API token: `auth.success`, level INFO.

Anonymous public requests (static files, /healthz, heartbeat pings) and accepted ingestion
(Sentry envelopes carry a DSN key, not a principal, and come by the thousand) are not logged;
refused ingestion is. The file is `analytics.security_log` (relative to data_dir), reopened
when logrotate moves it. Off, the flag costs one cached dictionary lookup per request.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nachtwacht.analytics import flags

if TYPE_CHECKING:
    from nachtwacht.web.state import AppState  # a core module imports no composition root

SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_loggers: dict[str, logging.Logger] = {}


def log_path(settings: Any) -> Path:
    path = Path(settings.analytics.security_log)
    return path if path.is_absolute() else Path(settings.data_dir) / path


def security_logger(path: Path) -> logging.Logger:
    """One logger per file, writing bare JSON lines, kept out of the root logger's output."""
    key = str(path)
    logger = _loggers.get(key)
    if logger is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        logger = logging.getLogger(f"nachtwacht.security.{len(_loggers)}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        handler = logging.handlers.WatchedFileHandler(key, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        _loggers[key] = logger
    return logger


def classify(
    method: str, path: str, status: int, principal: Any, refusal: str | None = None
) -> tuple[str, int] | None:
    """(event, logging level) for a finished request, or None when it is not logged;
    `refusal` is what the request's state says refused it ("csrf")."""
    if refusal == "csrf" and status == 403:
        return "csrf.failure", logging.WARNING
    if path == "/login" and method == "POST":
        ok = status < 400
        return ("login.success" if ok else "login.failure", logging.INFO if ok else logging.WARNING)
    if status in (401, 403):
        return "auth.failure", logging.WARNING
    if principal is None or status >= 400:
        return None
    if method not in SAFE and getattr(principal, "role", None) == "admin":
        return "admin.action", logging.INFO
    return "auth.success", logging.INFO


async def log_request(scope: dict[str, Any], status: int) -> None:
    """The security log's line for a finished request, if any (a web.status hook)."""
    state: AppState | None = getattr(scope["app"].state, "nw", None)  # None: not started
    if state is None:
        return
    runtime = state.runtime
    try:
        on = await flags.enabled_async(
            runtime.store, flags.SECURITY_LOGGING, flags.ttl_of(runtime.settings)
        )
    except Exception:  # the answer is sent; a log must never break a request
        logging.getLogger(__name__).exception("cannot read enable_security_logging")
        return
    if not on:
        return
    method, path = scope.get("method", "GET"), scope.get("path", "")
    state_of = scope.get("state") or {}
    principal = state_of.get("principal")
    found = classify(method, path, status, principal, state_of.get("refusal"))
    if found is None:
        return
    event, level = found
    client = scope.get("client")
    line = {
        "ts": datetime.fromtimestamp(runtime.clock.now(), UTC).isoformat(),
        "event": event,
        "method": method,
        "path": path,
        "status": status,
        "actor": getattr(principal, "name", None),
        "role": getattr(principal, "role", None),
        "via": getattr(principal, "kind", None),
        "ip": client[0] if client else None,
    }
    try:
        security_logger(log_path(runtime.settings)).log(level, json.dumps(line))
    except OSError as exc:
        logging.getLogger(__name__).warning("security log not written: %s", exc)
