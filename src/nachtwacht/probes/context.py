"""Resources shared by all probes of one process: the clock, the store, one HTTP session."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nachtwacht.clock import Clock, SystemClock

if TYPE_CHECKING:
    import aiohttp

    from nachtwacht.store.db import Store


@dataclass
class ProbeContext:
    clock: Clock = field(default_factory=SystemClock)
    store: Store | None = None
    data_dir: Path = Path("data")
    _http: aiohttp.ClientSession | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def http_session(self) -> aiohttp.ClientSession:
        """One keep-alive session for every HTTP probe: a new connection per check costs 3x CPU."""
        import aiohttp

        if self._http is None or self._http.closed:
            connector = aiohttp.TCPConnector(
                limit=0, ttl_dns_cache=300, keepalive_timeout=75, enable_cleanup_closed=True
            )
            self._http = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=True,
                trust_env=False,
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None and not self._http.closed:
            await self._http.close()
        self._http = None
