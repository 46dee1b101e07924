"""The dead man's switch: tell an outside heartbeat service, every minute, that we are alive.

Nachtwacht cannot page about its own death. A second Nachtwacht (a `heartbeat` probe's
`/ping/<token>`), healthchecks.io, Uptime Kuma's push monitor or any such service can: it
expects this call every `deadman_interval` and raises its alarm when the calls stop.

Each call carries the status: POST sends JSON (`status`, `site`, `version`, `store`, spool
backlog, unhealthy modules); GET adds `?status=ok|degraded`. A degraded Nachtwacht still
pings (it is alive, and says what is wrong); only a dead or hung one goes quiet. A failed call
is logged and makes the `deadman` engine module unhealthy in /healthz and `status`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from nachtwacht import __version__
from nachtwacht.clock import Clock, iso
from nachtwacht.config.masking import mask_capability_url
from nachtwacht.httpclient import HttpClient
from nachtwacht.watchdog.models import WatchdogSettings

log = logging.getLogger(__name__)
USER_AGENT = f"nachtwacht/{__version__} (dead man's switch)"


@dataclass
class DeadMan:
    settings: WatchdogSettings
    site: str
    clock: Clock
    status: Any  # () -> dict: the body's status fields, computed at each call
    http: HttpClient | None = None
    sent: int = 0
    failed: int = 0
    last_ok: float | None = None
    last_error: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str | None:
        return str(self.settings.deadman_url) if self.settings.deadman_url else None

    def body(self, now: float) -> dict[str, Any]:
        return {"site": self.site, "version": __version__, "at": iso(now), **self.status()}

    async def tick(self, now: float) -> None:
        """Call the URL once; raise (module unhealthy) when the call fails."""
        url = self.url
        if url is None:
            return
        body = self.body(now)
        timeout = float(self.settings.deadman_timeout)
        client = self.http or HttpClient(follow_redirects=True)
        headers = {"User-Agent": USER_AGENT}
        try:
            if self.settings.deadman_method == "POST":
                response = await client.post(url, json=body, timeout=timeout, headers=headers)
            else:
                params = {"status": body["status"]}
                response = await client.get(url, params=params, timeout=timeout, headers=headers)
            if response.status_code >= 300:
                raise RuntimeError(f"HTTP {response.status_code}")
        except Exception as exc:
            self.failed += 1
            reason = str(exc) or exc.__class__.__name__
            self.last_error = f"{_safe(url)}: {reason}"[:300]
            log.warning("dead man's switch: %s", self.last_error)
            raise RuntimeError(f"dead man's switch not delivered: {self.last_error}") from None
        finally:
            if self.http is None:
                await client.aclose()
        self.sent += 1
        self.last_ok = now
        self.last_error = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "configured": self.url is not None,
            "url": _safe(self.url) if self.url else None,
            "interval": self.settings.deadman_interval,
            "sent": self.sent,
            "failed": self.failed,
            "last_ok": iso(self.last_ok),
            "last_error": self.last_error,
        }


def _safe(url: str) -> str:
    """The URL without its path: a heartbeat URL's path is its secret token."""
    return mask_capability_url(url)
