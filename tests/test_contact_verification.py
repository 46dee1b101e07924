"""Contact verification end to end: a confirm link per contact and channel, sent through the
outbox to a real SMTP server (aiosmtpd), opened (GET shows a button, changes nothing) and
confirmed (POST); a wrong or expired link is refused and changes nothing; doctor, the on-call
page and the escalation view mark what is not verified; stale links are sent again once."""

from __future__ import annotations

import contextlib
import email
import email.policy
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import parse_config
from nachtwacht.config.schema import Settings
from nachtwacht.notify.sender import OutboxSender
from nachtwacht.oncall import verify
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.watchdog.doctor import check_contacts
from nachtwacht.web.app import create_app
from tests.auth_helpers import add_user, fast_hashing, login  # noqa: F401 - fixture
from tests.notify_helpers import smtp_server

DAY = 86400.0
LINK = re.compile(r"https://nw\.example\.org/verify/([A-Za-z0-9_-]+)")


def config(store: Store, port: int, public_url: bool | str = True) -> Settings:
    if isinstance(public_url, str):
        url = f"  public_url: {public_url}\n"
    else:
        url = "  public_url: https://nw.example.org\n" if public_url else ""
    return parse_config(
        f"store: {{url: '{store.url}'}}\n"
        "incidents:\n" + url + "notify:\n  channels:\n"
        f"    mail: {{kind: email, host: 127.0.0.1, port: {port}, starttls: false,"
        " sender: nw@example.org}\n"
        "people:\n  contacts:\n"
        "    - {id: alice, name: Alice Anders, roles: [oncall_engineer], email: a@example.org}\n"
        "    - {id: tina, name: Tina Techlead, roles: [technical_lead], email: t@example.org}\n",
        "test.yaml",
    )


def body_of(envelope: Any) -> str:
    msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def statuses(store: Store, settings: Settings, now: float) -> dict[str, str]:
    with store.connect() as conn:
        return {e["contact"]: e["status"] for e in verify.state(conn, settings, now)}


async def send_all(store: Store, settings: Settings, clock: FakeClock) -> None:
    sender = OutboxSender(store, settings, clock, "test", on_outcome=None)
    try:
        await sender.tick(clock.now())
    finally:
        await sender.close()


async def test_a_link_mailed_through_the_outbox_confirms_on_post_not_on_get(
    sqlite_store: Store, clock: FakeClock
) -> None:
    controller, box = smtp_server()
    try:
        settings = config(sqlite_store, controller.port)
        with sqlite_store.begin() as conn:
            sent = verify.send(conn, settings, clock.now())
        assert {(s["contact"], s["channel"]) for s in sent} == {("alice", "mail"), ("tina", "mail")}
        with sqlite_store.connect() as conn:  # an obligation row, not a message in memory
            kinds = conn.execute(select(t.outbox.c.kind, t.outbox.c.address)).all()
            stored = conn.execute(select(t.contact_verifications.c.token_hash)).scalars().all()
        assert sorted(kinds) == [
            ("verification", "a@example.org"),
            ("verification", "t@example.org"),
        ]
        assert statuses(sqlite_store, settings, clock.now()) == {
            "alice": "pending",
            "tina": "pending",
        }
        await send_all(sqlite_store, settings, clock)
        [mail] = [m for m in box.messages if m.rcpt_tos == ["t@example.org"]]
        text = body_of(mail)
        [token] = LINK.findall(text)
        assert token not in stored and verify.token_hash(token) in stored  # only the hash
        assert "Tina Techlead" in text

        app = create_app(settings, sqlite_store, clock, start_engine=False)
        with TestClient(app) as client:
            page = client.get(f"/verify/{token}")
            assert page.status_code == 200 and "<form method=post>" in page.text
            assert "t@example.org" in page.text
            # a link scanner's GET confirmed nothing
            assert statuses(sqlite_store, settings, clock.now())["tina"] == "pending"
            clock.advance(3600)
            done = client.post(f"/verify/{token}")
            assert done.status_code == 200 and "Confirmed" in done.text
            # a second press changes nothing and says so
            again = client.get(f"/verify/{token}")
            assert again.status_code == 200 and "Already confirmed" in again.text
        now = clock.now()
        assert statuses(sqlite_store, settings, now) == {"tina": "verified", "alice": "pending"}
        with sqlite_store.connect() as conn:
            [tina] = [e for e in verify.state(conn, settings, now) if e["contact"] == "tina"]
        assert tina["verified_at"] == now
    finally:
        controller.stop()


async def test_a_wrong_or_expired_link_is_refused_and_changes_nothing(
    sqlite_store: Store, clock: FakeClock
) -> None:
    settings = config(sqlite_store, 1)
    with sqlite_store.begin() as conn:
        verify.send(conn, settings, clock.now(), contact="alice")
        # the token only exists in the message: read it back from the outbox body
        body = conn.execute(select(t.outbox.c.body)).scalar_one()
    [token] = LINK.findall(body)
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    with TestClient(app) as client:
        wrong = client.post("/verify/" + "x" * 32)
        assert wrong.status_code == 404 and "Nothing was changed" in wrong.text
        clock.advance(15 * DAY)  # links are valid 14 days
        assert client.get(f"/verify/{token}").status_code == 410
        late = client.post(f"/verify/{token}")
        assert late.status_code == 410 and "expired" in late.text
    assert statuses(sqlite_store, settings, clock.now())["alice"] == "unverified"
    with sqlite_store.connect() as conn:
        confirmed = conn.execute(
            select(func.count()).where(t.contact_verifications.c.status == "confirmed")
        ).scalar_one()
    assert confirmed == 0


def test_a_newer_link_replaces_the_older_one(sqlite_store: Store, clock: FakeClock) -> None:
    settings = config(sqlite_store, 1)
    with sqlite_store.begin() as conn:
        verify.send(conn, settings, clock.now(), contact="alice")
        verify.send(conn, settings, clock.now() + 60, contact="alice")
        first, second = [
            LINK.findall(b)[0] for b in conn.execute(select(t.outbox.c.body)).scalars()
        ]
        with pytest.raises(verify.VerifyError, match="replaced"):
            verify.confirm(conn, first, clock.now() + 120)
        assert verify.confirm(conn, second, clock.now() + 120)["status"] == "confirmed"


def test_links_need_a_public_url_people_can_open(sqlite_store: Store, clock: FakeClock) -> None:
    settings = config(sqlite_store, 1, public_url=False)
    with sqlite_store.begin() as conn, pytest.raises(verify.VerifyError, match="not set"):
        verify.send(conn, settings, clock.now())
    # set, but to loopback: the error says what it is, not that it is missing
    loopback = config(sqlite_store, 1, public_url="http://127.0.0.1:8080")
    with sqlite_store.begin() as conn, pytest.raises(verify.VerifyError) as refused:
        verify.send(conn, loopback, clock.now())
    assert "public_url is http://127.0.0.1:8080, which only this machine opens" in str(
        refused.value
    )
    with sqlite_store.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.outbox)).scalar_one() == 0


def test_bad_contact_or_channel_is_refused(sqlite_store: Store, clock: FakeClock) -> None:
    settings = config(sqlite_store, 1)
    with sqlite_store.begin() as conn:
        with pytest.raises(verify.VerifyError, match="no contact 'bob'"):
            verify.send(conn, settings, clock.now(), contact="bob")
        with pytest.raises(verify.VerifyError, match="no channel or channel kind 'sms'"):
            verify.send(conn, settings, clock.now(), channel="sms")


def confirm_all(store: Store, settings: Settings, now: float) -> None:
    with store.begin() as conn:
        verify.send(conn, settings, now)
        for body in conn.execute(select(t.outbox.c.body)).scalars().all():
            for token in LINK.findall(body):
                with contextlib.suppress(verify.VerifyError):  # replaced by a later send
                    verify.confirm(conn, token, now)


def test_doctor_names_unverified_contacts_then_is_ok(
    sqlite_store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = config(sqlite_store, 1)
    found = check_contacts(settings, sqlite_store)
    assert found.level == "warn"
    assert "Tina Techlead (technical lead): e-mail unverified" in found.message
    assert "nachtwacht contacts verify" in found.message
    import time

    confirm_all(sqlite_store, settings, time.time())
    assert check_contacts(settings, sqlite_store).level == "ok"
    # without a public URL the doctor says why no link can be sent
    bare = config(sqlite_store, 1, public_url=False)
    other = Store(
        f"sqlite:///{Path(str(sqlite_store.url).removeprefix('sqlite:///')).parent / 'b.db'}"
    )
    other.migrate()
    try:
        found = check_contacts(bare, other)
    finally:
        other.dispose()
    assert found.level == "warn" and "incidents.public_url is not set" in found.message


def test_a_confirmation_goes_stale_after_a_quarter_and_is_sent_again_once(
    sqlite_store: Store, clock: FakeClock
) -> None:
    settings = config(sqlite_store, 1)
    confirm_all(sqlite_store, settings, clock.now())
    with sqlite_store.begin() as conn:
        assert verify.reverify(conn, settings, clock.now()) == []  # all fresh
    clock.advance(91 * DAY)
    assert set(statuses(sqlite_store, settings, clock.now()).values()) == {"stale"}
    with sqlite_store.begin() as conn:
        sent = verify.reverify(conn, settings, clock.now())
    assert sorted(s["contact"] for s in sent) == ["alice", "tina"]
    assert {s["channel"] for s in sent} == {"mail"}
    with sqlite_store.begin() as conn:  # claimed: a second engine (or tick) sends nothing
        assert verify.reverify(conn, settings, clock.now() + 3600) == []
    assert set(statuses(sqlite_store, settings, clock.now()).values()) == {"pending"}


def test_oncall_page_and_escalation_view_mark_unverified_channels(
    sqlite_store: Store,
    clock: FakeClock,
    fast_hashing: None,  # noqa: F811
) -> None:
    from nachtwacht.incidents import service as incidents
    from nachtwacht.incidents.dashboard import incident_view

    settings = config(sqlite_store, 1)
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    with TestClient(app) as client:
        add_user(sqlite_store, clock, "vic", "viewer")
        login(client, "vic")
        page = client.get("/oncall")
        assert page.status_code == 200
        assert 'data-unverified="tina:mail"' in page.text
    with sqlite_store.begin() as conn:
        inc = incidents.open_incident(conn, settings, title="Down", severity=1, now=clock.now())
        view = incident_view(conn, settings, inc, clock.now())
    assert view is not None
    notes = [n for s in view["plan"]["steps"] for n in s["unverified"]]
    assert "Tina Techlead (technical lead): e-mail unverified" in notes


def test_contacts_cli_verify_and_list(sqlite_store: Store, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from nachtwacht.cli.main import app

    cfg = tmp_path / "nachtwacht.yaml"
    cfg.write_text(
        f"store: {{url: '{sqlite_store.url}'}}\n"
        "incidents: {public_url: 'https://nw.example.org'}\n"
        "notify:\n  channels:\n"
        "    mail: {kind: email, host: 127.0.0.1, port: 1, starttls: false,"
        " sender: nw@example.org}\n"
        "people:\n  contacts:\n"
        "    - {id: tina, name: Tina Techlead, roles: [technical_lead], email: t@example.org}\n"
    )
    runner = CliRunner()
    listed = runner.invoke(app, ["contacts", "list", "--config", str(cfg)])
    assert listed.exit_code == 0, listed.output
    assert "UNVERIFIED" in listed.output
    sent = runner.invoke(app, ["contacts", "verify", "--contact", "tina", "--config", str(cfg)])
    assert sent.exit_code == 0, sent.output
    assert "1 confirm link(s) queued" in sent.output
    listed = runner.invoke(app, ["contacts", "list", "--config", str(cfg)])
    assert "link sent" in listed.output
    bad = runner.invoke(app, ["contacts", "verify", "--contact", "nobody", "--config", str(cfg)])
    assert bad.exit_code == 2 and "no contact 'nobody'" in bad.output


def test_the_api_sends_links_for_admins_and_shows_the_state_to_viewers(
    sqlite_store: Store, clock: FakeClock
) -> None:
    from tests.helpers import admin_token

    settings = config(sqlite_store, 1)
    admin = {"Authorization": f"Bearer {admin_token(sqlite_store, clock.now())}"}
    viewer = {"Authorization": f"Bearer {admin_token(sqlite_store, clock.now(), 'viewer')}"}
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    with TestClient(app) as client:
        shown = client.get("/api/v1/contacts/verification", headers=viewer)
        assert shown.status_code == 200
        assert {e["status"] for e in shown.json()["channels"]} == {"unverified"}
        assert client.post("/api/v1/contacts/verify", json={}, headers=viewer).status_code == 403
        bad = client.post("/api/v1/contacts/verify", json={"contact": "nobody"}, headers=admin)
        assert bad.status_code == 404 and bad.json()["field"] == "contact"
        sent = client.post("/api/v1/contacts/verify", json={"contact": "tina"}, headers=admin)
        assert sent.status_code == 201
        assert [s["contact"] for s in sent.json()["sent"]] == ["tina"]
    assert statuses(sqlite_store, settings, clock.now()) == {
        "alice": "unverified",
        "tina": "pending",
    }
