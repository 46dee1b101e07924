"""The status page end to end: double opt-in through a real SMTP server, the Atom feed, and a
subscriber's webhook on a real HTTP receiver; the app is the real one, on its own host name."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from nachtwacht.clock import FakeClock
from nachtwacht.config.schema import Settings
from nachtwacht.incidents.service import record_delivery
from nachtwacht.notify.sender import OutboxSender
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.helpers import admin_token
from tests.incident_fixtures import SITE, fire_db
from tests.notify_helpers import Receiver, smtp_server
from tests.statuspage_fixtures import INTERNAL, STATUS

HOST = "status.vereniging.example"
ATOM = "{http://www.w3.org/2005/Atom}"


def _settings(store: Store, smtp_port: int = 2525, extra: str = "") -> Settings:
    from nachtwacht.config.loader import parse_config

    chat = '    chat: {kind: slack, url: "http://127.0.0.1:9/hook"}\n'
    text = SITE.replace("port: 2525", f"port: {smtp_port}").replace(chat, chat + extra)
    text += STATUS + f"  host: {HOST}\n"
    return parse_config(f"store:\n  url: {store.url}\n" + text, "site.yaml")


def _deliver(store: Store, settings: Settings, clock: FakeClock) -> list[dict[str, Any]]:
    """Send every pending message through the real channels; return the rows afterwards."""
    with store.connect() as conn:
        ids = list(
            conn.execute(select(t.outbox.c.id).where(t.outbox.c.status == "pending")).scalars()
        )

    async def run() -> list[dict[str, Any]]:
        sender = OutboxSender(store, settings, clock, "test", on_outcome=record_delivery)
        try:
            return await sender.deliver(ids, timeout=20)
        finally:
            await sender.close()

    return asyncio.run(run())


@pytest.fixture
def smtp() -> Iterator[tuple[Any, Any]]:
    controller, box = smtp_server()
    yield controller, box
    controller.stop()


def _mails(box: Any) -> list[email.message.EmailMessage]:
    return [
        email.message_from_bytes(m.original_content, policy=email.policy.default)  # type: ignore[misc]
        for m in box.messages
    ]


def _link(message: Any, kind: str) -> str:
    text = message.get_content()
    found = re.search(rf"https://{re.escape(HOST)}/{kind}/[A-Za-z0-9_-]{{43}}", text)
    assert found, text
    return found.group(0)


def _state(store: Store, address: str) -> str:
    with store.connect() as conn:
        return conn.execute(
            select(t.status_subscribers.c.state).where(t.status_subscribers.c.address == address)
        ).scalar_one()


def test_double_opt_in_then_a_published_notice_mails_with_a_working_unsubscribe(
    sqlite_store: Store, clock: FakeClock, smtp: tuple[Any, Any]
) -> None:
    controller, box = smtp
    settings = _settings(sqlite_store, controller.port)
    token = admin_token(sqlite_store)
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    with TestClient(app, base_url=f"https://{HOST}") as client:
        answer = client.post("/subscribe", data={"email": "member@example.net"})
        assert answer.status_code == 202
        assert "confirmation link is on its way" in answer.text
        # asking again says the same: nothing tells whether an address is known
        assert client.post("/subscribe", data={"email": "member@example.net"}).text == answer.text
        assert _deliver(sqlite_store, settings, clock)[0]["status"] == "sent"
        [confirm_mail] = _mails(box)
        assert confirm_mail["To"] == "member@example.net"
        confirm = _link(confirm_mail, "confirm")
        # a mail scanner fetching the link confirms nothing; the button does
        shown = client.get(confirm)
        assert shown.status_code == 200 and "Confirm my subscription" in shown.text
        assert _state(sqlite_store, "member@example.net") == "pending"
        assert client.post(confirm).status_code == 200
        assert _state(sqlite_store, "member@example.net") == "confirmed"

        incident_id = fire_db(sqlite_store, settings, clock.now())
        api = {"Authorization": f"Bearer {token}"}
        host = {"Host": "127.0.0.1:8080"}  # the dashboard's own address, not the status host
        draft = client.post(
            "http://127.0.0.1:8080/api/v1/statuspage/notices",
            json={"incident_id": incident_id},
            headers=api | host,
        )
        assert draft.status_code == 201, draft.text
        approved = client.post(
            f"http://127.0.0.1:8080/api/v1/statuspage/notices/{draft.json()['id']}/approve",
            headers=api | host,
        )
        assert approved.status_code == 200 and approved.json()["queued"] == 1
        with sqlite_store.begin() as conn:  # the incident's own pages are not this test's
            conn.execute(
                t.outbox.update().where(t.outbox.c.kind != "status_notice").values(status="sent")
            )
        _deliver(sqlite_store, settings, clock)
        notice_mail = _mails(box)[-1]
        assert notice_mail["To"] == "member@example.net"
        assert notice_mail["Subject"] == "[Vereniging status] Service disruption: Member database"
        body = notice_mail.get_content()
        assert "We are currently experiencing technical issues with Member database." in body
        for secret in INTERNAL:
            assert secret not in body
        off = _link(notice_mail, "unsubscribe")
        assert notice_mail["List-Unsubscribe"] == f"<{off}>"
        assert notice_mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert confirm_mail["List-Unsubscribe"] is None  # nothing to leave before confirming
        assert client.get(off).status_code == 200
        assert client.post(off).status_code == 200
        assert _state(sqlite_store, "member@example.net") == "unsubscribed"
        # the status host serves the status page and nothing of the dashboard; the page's own
        # links work there too
        home = client.get("/")
        assert home.status_code == 200
        action = re.search(r'<form method="post" action="([^"]+)"', home.text)
        assert action is not None
        again = client.post(action.group(1), data={"email": "other@example.net"})
        assert again.status_code == 202
        feed = re.search(r'href="([^"]+feed.atom)"', home.text)
        assert feed is not None and client.get(feed.group(1)).status_code == 200
        assert client.get("/api/v1/incidents").status_code == 404
        assert client.get("/nonsense/confirm/x").status_code == 404


def test_the_atom_feed_is_valid_atom_with_published_notices_only(
    sqlite_store: Store, clock: FakeClock
) -> None:
    from nachtwacht.statuspage import notices

    settings = _settings(sqlite_store)
    now = clock.now()
    incident_id = fire_db(sqlite_store, settings, now)
    with sqlite_store.begin() as conn:
        first = notices.draft(conn, settings, incident_id, "olga", now)
        notices.approve(conn, settings, first["id"], "root", "admin", now + 60)
        notices.draft(conn, settings, incident_id, "olga", now + 120, title="Not approved yet")
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    with TestClient(app) as client:
        answer = client.get("/status-page/feed.atom")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/atom+xml")
    feed = ET.fromstring(answer.content)
    assert feed.tag == f"{ATOM}feed"
    for tag in ("id", "title", "updated", "author"):
        assert feed.find(f"{ATOM}{tag}") is not None, tag
    entries = feed.findall(f"{ATOM}entry")
    assert [e.findtext(f"{ATOM}title") for e in entries] == ["Service disruption: Member database"]
    entry = entries[0]
    assert entry.findtext(f"{ATOM}updated") == "2027-01-15T08:01:00Z"
    assert entry.findtext(f"{ATOM}id") == f"https://status.vereniging.example/notices/{first['id']}"
    assert "Status: investigating" in (entry.findtext(f"{ATOM}content") or "")
    text = answer.text
    for secret in (*INTERNAL, "Not approved yet"):
        assert secret not in text


async def test_a_subscribers_webhook_gets_the_notice_without_the_channels_secrets(
    sqlite_store: Store, clock: FakeClock
) -> None:
    from nachtwacht.statuspage import notices, subscribers

    receiver = await Receiver().start()
    try:
        settings = _settings(
            sqlite_store,
            extra="    hook: {kind: webhook, url: 'http://127.0.0.1:9/team', "
            "headers: {Authorization: 'Bearer team-secret'}}\n",
        )
        now = clock.now()
        incident_id = fire_db(sqlite_store, settings, now)
        with sqlite_store.begin() as conn:
            sub = subscribers.add_webhook(conn, settings, f"{receiver.url}/hooks/status", now)
            draft = notices.draft(conn, settings, incident_id, "olga", now)
            _, queued = notices.approve(conn, settings, draft["id"], "root", "admin", now)
            ids = list(
                conn.execute(
                    select(t.outbox.c.id).where(t.outbox.c.kind == "status_notice")
                ).scalars()
            )
        assert queued == 1 and len(ids) == 1
        sender = OutboxSender(sqlite_store, settings, clock, "test", on_outcome=record_delivery)
        try:
            rows = await sender.deliver(ids, timeout=20)
        finally:
            await sender.close()
        assert rows[0]["status"] == "sent", rows[0]["last_error"]
        [seen] = receiver.seen
        assert (seen.method, seen.path) == ("POST", "/hooks/status")
        assert "Authorization" not in seen.headers  # the team channel's secret stays home
        assert seen.headers["Idempotency-Key"] == f"status:n{draft['id']}:s{sub['id']}"
        payload = seen.json["payload"]
        assert payload["notice"]["title"] == "Service disruption: Member database"
        assert payload["notice"]["components"] == ["Member database"]
        assert payload["unsubscribe"].startswith("https://status.vereniging.example/unsubscribe/")
        for secret in INTERNAL:
            assert secret not in seen.text
    finally:
        await receiver.stop()


def test_by_default_there_is_no_public_page(sqlite_store: Store, clock: FakeClock) -> None:
    from tests.helpers import settings_for

    settings = settings_for("probes: []\n", sqlite_store.url)
    assert settings.status_page.enabled is False
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    with TestClient(app, follow_redirects=False) as client:
        for path in ("/status-page", "/status-page/feed.atom", "/status-page/status.json"):
            assert client.get(path).status_code in (401, 404), path
        refused = client.post("/status-page/subscribe", data={"email": "a@example.org"})
        assert refused.status_code in (303, 401, 404)
    with sqlite_store.connect() as conn:
        assert conn.execute(select(t.status_subscribers)).first() is None
