"""Shared builders for the error-tracking tests: Sentry events, envelopes, an app with a project.

(No tests here; the other test_errors_* files import these.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from nachtwacht.clock import FakeClock
from nachtwacht.errors import projects
from nachtwacht.errors.envelope import record
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.helpers import settings_for


def frame(
    function: str, line: str, module: str = "shop.orders", in_app: bool = True, lineno: int = 10
) -> dict[str, Any]:
    return {
        "module": module,
        "filename": module.replace(".", "/") + ".py",
        "function": function,
        "lineno": lineno,
        "context_line": f"    {line}",
        "pre_context": ["def f():"],
        "post_context": [""],
        "in_app": in_app,
    }


def exc_event(
    kind: str = "ValueError",
    value: str = "order 17 is invalid",
    frames: list[dict[str, Any]] | None = None,
    event_id: str | None = None,
    ts: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    exc: dict[str, Any] = {"type": kind, "value": value}
    if frames is not None:
        exc["stacktrace"] = {"frames": frames}
    event: dict[str, Any] = {
        "event_id": event_id or uuid.uuid4().hex,
        "level": "error",
        "platform": "python",
        "exception": {"values": [exc]},
        **extra,
    }
    if ts is not None:
        event["timestamp"] = ts
    return event


def msg_event(message: str, event_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id or uuid.uuid4().hex,
        "level": "info",
        "message": message,
        **extra,
    }


def envelope(*events: dict[str, Any], dsn: str | None = None, lengths: bool = True) -> bytes:
    header: dict[str, Any] = {"sent_at": "2027-01-15T08:00:00Z"}
    if dsn:
        header["dsn"] = dsn
    if len(events) == 1:
        header["event_id"] = events[0].get("event_id")
    parts = [orjson.dumps(header)]
    for event in events:
        payload = orjson.dumps(event)
        item: dict[str, Any] = {"type": "event", "content_type": "application/json"}
        if lengths:
            item["length"] = len(payload)
        parts += [orjson.dumps(item), payload]
    # things an SDK sends along that are not errors
    session = orjson.dumps({"sid": uuid.uuid4().hex, "status": "ok"})
    parts += [orjson.dumps({"type": "session", "length": len(session)}), session]
    return b"\n".join(parts) + b"\n"


def records(project_id: int, received_at: float, *events: dict[str, Any]) -> list[bytes]:
    return [record(project_id, received_at, orjson.dumps(e)) for e in events]


def add_project(store: Store, name: str = "shop", now: float = 1_800_000_000.0) -> dict[str, Any]:
    with store.begin() as conn:
        return projects.add_project(conn, name, now, actor="tests", base="http://testserver")


def count(store: Store, table: Any) -> int:
    with store.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def events(store: Store) -> int:
    return count(store, t.error_events)


@dataclass
class Server:
    client: TestClient
    store: Store
    clock: FakeClock
    project: dict[str, Any]

    @property
    def runtime(self) -> Any:
        return self.client.app.state.nw.runtime  # type: ignore[attr-defined]

    def drain(self) -> int:
        return self.runtime.drainer.drain_all()

    def sentry(self, key: str | None = None) -> dict[str, str]:
        return {"X-Sentry-Auth": f"Sentry sentry_key={key or self.project['public_key']}, "
                "sentry_version=7, sentry_client=tests/1.0"}  # fmt: skip


@contextmanager
def server(
    store: Store, tmp_path: Path, clock: FakeClock, extra: str = "", spool: str = ""
) -> Iterator[Server]:
    """The real app (engine not started: the test drains the spool itself)."""
    settings = settings_for(f"spool:\n  dir: {tmp_path / 'spool'}\n{spool}{extra}", store.url)
    project = add_project(store)
    app = create_app(settings, store, clock, start_engine=False)
    with TestClient(app) as client:
        yield Server(client, store, clock, project)
