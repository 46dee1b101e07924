"""End to end in one process: a real probe fails, the page reaches a real webhook receiver,
acknowledging over the API stops repeats, recovery sends the resolved notice."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from aiohttp import web

from nachtwacht.config.loader import parse_config
from nachtwacht.engine.runtime import Runtime
from nachtwacht.store.db import Store
from tests.conftest import free_port
from tests.helpers import until


async def _receiver() -> tuple[web.AppRunner, int, list[dict]]:
    got: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        got.append({"key": request.headers.get("Idempotency-Key"), **(await request.json())})
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port, got


async def test_failure_pages_through_the_outbox_and_recovery_resolves(tmp_path: Path) -> None:
    runner, hook_port, got = await _receiver()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    target_port = listener.getsockname()[1]  # bound, not listening: refused
    settings = parse_config(
        f"""
site: e2e
store: {{url: "sqlite:///{tmp_path / "nw.db"}"}}
engine: {{startup_spread: 0.1s, flush_interval: 0.1s}}
people:
  contacts:
    - {{id: olga, name: Olga, roles: [oncall_engineer], chat: "@olga"}}
notify:
  channels:
    hook: {{kind: webhook, url: "http://127.0.0.1:{hook_port}/hook"}}
probes:
  - {{name: db, kind: tcp, host: 127.0.0.1, port: {target_port}, interval: 1s, retries: 0,
      component: database, severity: 1}}
""",
        str(tmp_path / "nachtwacht.yaml"),
    )
    store = Store(settings.store.url)
    rt = Runtime.build(settings, store)
    rt.start()
    try:
        await until(lambda: any(m["kind"] == "emergency_alert" for m in got), "first page")
        page = next(m for m in got if m["kind"] == "emergency_alert")
        assert page["payload"]["severity"] == 1
        assert "db" in page["subject"] or "database" in page["subject"]
        assert page["key"]  # the receiver can deduplicate a retried delivery

        incident_id = page["payload"]["incident_id"]
        from nachtwacht.incidents import service

        with store.begin() as conn:
            service.acknowledge(conn, incident_id, "olga", rt.clock.now())

        listener.listen(16)  # the database is back
        await until(lambda: any(m["kind"] == "resolved" for m in got), "resolved notice")
        with store.connect() as conn:
            inc = service.require(conn, incident_id)
            kinds = [e["kind"] for e in service.timeline(conn, incident_id)]
        assert inc["status"] == "resolved"
        assert "notification_sent" in kinds and "acknowledged" in kinds and "resolved" in kinds
        # exactly one page per key: nothing sent twice
        keys = [m["key"] for m in got]
        assert len(keys) == len(set(keys)), json.dumps(got, indent=1)
    finally:
        await rt.stop()
        store.dispose()
        listener.close()
        await runner.cleanup()


async def test_ack_link_shows_a_button_and_acknowledges_on_post(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from nachtwacht.incidents import service
    from nachtwacht.web.app import create_app

    settings = parse_config(
        f'store: {{url: "sqlite:///{tmp_path / "nw.db"}"}}\nprobes: []\n', "x.yaml"
    )
    store = Store(settings.store.url)
    app = create_app(settings, store, start_engine=False)
    with TestClient(app) as client:
        with store.begin() as conn:
            inc_id = service.open_incident(
                conn, settings, title="Site down", severity=1, now=1_800_000_000.0
            )
            token = service.require(conn, inc_id)["ack_token"]
        page = client.get(f"/ack/{token}")
        assert page.status_code == 200 and "<form method=post>" in page.text
        with store.connect() as conn:
            assert service.require(conn, inc_id)["acknowledged_at"] is None  # GET changes nothing
        done = client.post(f"/ack/{token}", data={"actor": "Olga"})
        assert (
            done.status_code == 200 and "Acknowledged as <strong>Olga (link)</strong>" in done.text
        )
        with store.connect() as conn:
            inc = service.require(conn, inc_id)
        assert inc["acknowledged_by"] == "Olga (link)"
        assert client.get("/ack/nope").status_code == 404
    store.dispose()
