"""Support for the checklist and review tests (no tests here): a site config whose every
checklist item has something real to check, and the dashboard served by a real uvicorn."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import insert

from nachtwacht.clock import Clock
from nachtwacht.config.schema import Settings
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.conftest import REDIS_URL
from tests.helpers import settings_for
from tests.notify_helpers import PortZeroController


def site_yaml(
    port: int, smtp_port: int, sqlite_file: Path, redis: bool = True, checklist: str = ""
) -> str:
    """Probes for the sql, http and redis items; mail for the alert item; the server's port."""
    redis_probe = (
        f"  - {{name: cache, kind: redis, url: '{REDIS_URL}', component: cache}}\n" if redis else ""
    )
    return f"""
site: verify-test
server: {{host: 127.0.0.1, port: {port}}}
people:
  contacts:
    - {{id: olga, name: Olga Oncall, roles: [oncall_engineer], email: olga@example.org}}
    - {{id: tina, name: Tina Techlead, roles: [technical_lead], email: tina@example.org}}
notify:
  channels:
    mail: {{kind: email, host: 127.0.0.1, port: {smtp_port}, starttls: false}}
reviews:
  checklist: {{notify_wait: 10s{checklist}}}
probes:
  - {{name: store-sql, kind: sql, url: 'sqlite:///{sqlite_file}', component: database}}
  - {{name: dashboard-http, kind: http, url: 'http://127.0.0.1:{port}/login', component: web}}
{redis_probe}"""


def settings(store: Store, port: int, smtp_port: int, sqlite_file: Path, **kw: Any) -> Settings:
    return settings_for(site_yaml(port, smtp_port, sqlite_file, **kw), store.url)


def add_baseline(store: Store, now: float) -> None:
    with store.begin() as conn:
        conn.execute(
            insert(t.baselines).values(
                name="after-upgrade",
                captured_at=now - 3600,
                captured_by="tests",
                window_start=now - 7200,
                window_end=now - 3600,
                data_json="{}",
            )
        )


class Mail:
    """A real SMTP server keeping what it accepts."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.controller = PortZeroController(self)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"

    def __enter__(self) -> Mail:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    @property
    def port(self) -> int:
        return self.controller.port


class LiveApp:
    """The real app (engine not started) served by uvicorn on 127.0.0.1:`port` in a thread."""

    def __init__(self, settings: Settings, store: Store, clock: Clock) -> None:
        self.app = create_app(settings, store, clock, start_engine=False)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=settings.server.port,
            log_level="warning",
            lifespan="on",
            loop="asyncio",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveApp:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:  # bounded wait for start-up, not a timing assertion
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
