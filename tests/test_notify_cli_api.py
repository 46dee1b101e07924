"""`nachtwacht notify test CONTACT`, POST /api/v1/notify/test and GET /api/v1/outbox."""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import patch

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from nachtwacht.cli.main import main
from nachtwacht.clock import FakeClock
from nachtwacht.config import load_config
from nachtwacht.notify.api import router
from nachtwacht.notify.cli import notify_app
from nachtwacht.store.db import Store
from nachtwacht.web import errors
from nachtwacht.web.state import AppState, install
from tests.notify_helpers import Mailbox, Receiver, smtp_server


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
def smtp() -> Iterator[tuple[int, Mailbox]]:
    controller, box = smtp_server()
    yield controller.port, box
    controller.stop()


@pytest.fixture
def config(tmp_path: Path, receiver: Receiver, smtp: tuple[int, Mailbox]) -> Path:
    path = tmp_path / "nachtwacht.yaml"
    path.write_text(
        f"""
site: shop
store:
  url: sqlite:///{tmp_path / "nw.db"}
people:
  contacts:
    - {{id: alice, name: Alice Jansen, email: alice@example.org, chat: "@alice"}}
    - {{id: bob, name: Bob, phone: "+31600000002"}}
notify:
  retry_backoff: 1s
  channels:
    mail: {{kind: email, host: 127.0.0.1, port: {smtp[0]}, starttls: false}}
    hook: {{kind: webhook, url: "{receiver.url}/hook"}}
"""
    )
    return path


@pytest.fixture
async def api(config: Path) -> AsyncIterator[httpx.AsyncClient]:
    cfg = load_config(str(config))
    store = Store(cfg.store.url)
    store.migrate()
    app = FastAPI()
    errors.install(app)
    app.include_router(router)
    install(app, AppState.of(SimpleNamespace(settings=cfg, store=store, clock=FakeClock())))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://nw") as client:
        yield client
    store.dispose()


async def cli(*args: str) -> Any:
    # in a thread: the command runs its own event loop, the receivers run in this one
    return await asyncio.to_thread(CliRunner().invoke, notify_app, list(args))


async def test_notify_test_reaches_the_contact_on_every_channel(
    config: Path, receiver: Receiver, smtp: tuple[int, Mailbox]
) -> None:
    result = await cli("test", "alice", "--config", str(config))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("mail (email)") and "alice@example.org" in lines[0]
    assert lines[0].endswith("sent") and lines[1].endswith("sent")
    assert len(smtp[1].messages) == 1
    assert b"Nachtwacht test - shop" in smtp[1].messages[0].original_content
    [seen] = receiver.seen
    assert seen.json["kind"] == "test" and "@alice" in seen.json["body"]


async def test_notify_test_exits_1_and_says_why_when_a_channel_fails(
    config: Path, receiver: Receiver
) -> None:
    receiver.answers = [403]
    result = await cli("test", "alice", "--config", str(config))
    assert result.exit_code == 1
    hook = next(line for line in result.output.splitlines() if line.startswith("hook"))
    assert "FAILED: webhook hook: HTTP 403" in hook


async def test_notify_test_retries_within_the_wait_then_gives_up(
    config: Path, receiver: Receiver
) -> None:
    receiver.answers = [500] * 100
    result = await cli("test", "alice", "--config", str(config), "--wait", "1.5")
    assert result.exit_code == 1
    assert "FAILED: webhook hook: HTTP 500" in result.output
    assert list(receiver.keys.values()) == [2]  # retried after retry_backoff (1s), same key
    listing = await cli("outbox", "--config", str(config), "--status", "pending")
    assert listing.output == ""  # a test that failed does not linger in the outbox


def _main(*args: str) -> tuple[object, str]:
    """The whole command, as run: a domain's refusal becomes one line and an exit code there."""
    err = io.StringIO()
    with patch.object(sys, "argv", ["nachtwacht", *args]), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            return exc.code, err.getvalue()
    raise AssertionError("main() did not exit")


async def test_notify_test_of_an_unknown_contact_is_a_one_line_error(config: Path) -> None:
    code, err = await asyncio.to_thread(_main, "notify", "test", "zed", "--config", str(config))
    assert code == 2
    assert err.startswith("error: no contact 'zed' (contacts: alice, bob)")
    assert len(err.strip().splitlines()) == 1


async def test_outbox_command_lists_rows(config: Path) -> None:
    await cli("test", "bob", "--config", str(config), "--wait", "0")
    result = await cli("outbox", "--config", str(config))
    assert result.exit_code == 0
    assert "test" in result.output and "hook:*" in result.output


async def test_api_notify_test_reports_each_channel(
    api: httpx.AsyncClient, receiver: Receiver, smtp: tuple[int, Mailbox]
) -> None:
    response = await api.post("/api/v1/notify/test", json={"contact": "alice"})
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert [(c["channel"], c["status"]) for c in body["channels"]] == [
        ("mail", "sent"),
        ("hook", "sent"),
    ]
    assert len(smtp[1].messages) == 1 and len(receiver.seen) == 1


async def test_api_notify_test_with_a_failing_channel_is_not_ok(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.answers = [410]
    body = (await api.post("/api/v1/notify/test", json={"contact": "alice"})).json()
    assert body["ok"] is False
    hook = next(c for c in body["channels"] if c["channel"] == "hook")
    assert hook["status"] == "dead" and "HTTP 410" in hook["error"]


async def test_api_unknown_contact_is_a_404_naming_the_field(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/notify/test", json={"contact": "zed"})
    assert response.status_code == 404
    assert response.json()["field"] == "contact"


async def test_api_lists_the_outbox_by_status(api: httpx.AsyncClient) -> None:
    await api.post("/api/v1/notify/test", json={"contact": "alice"})
    rows = (await api.get("/api/v1/outbox", params={"status": "sent"})).json()
    assert {r["channel"] for r in rows} == {"mail", "hook"}
    assert all(r["sent_at"].endswith("Z") and r["kind"] == "test" for r in rows)
    assert (await api.get("/api/v1/outbox", params={"status": "dead"})).json() == []
    bad = await api.get("/api/v1/outbox", params={"status": "lost"})
    assert bad.status_code == 422 and bad.json()["field"] == "status"
