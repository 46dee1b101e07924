"""Edited notification templates: preview, edit and send, from the incident page and the API.

One service (`notifications.send_custom`) behind both doors; real app, real SQLite store.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from nachtwacht.clock import FakeClock
from nachtwacht.config.schema import Settings
from nachtwacht.incidents import notifications
from nachtwacht.incidents import service as incidents
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.auth_helpers import add_user, fast_hashing, login  # noqa: F401 - fixture
from tests.conftest import closed_port
from tests.helpers import admin_token, settings_for

HTML = {"Accept": "text/html"}


def _settings(store: Store) -> Settings:
    return settings_for(
        f"""
site: messages-test
people:
  contacts:
    - {{id: olga, name: Olga Oncall, roles: [oncall_engineer], email: olga@example.org,
        chat: "@olga"}}
    - {{id: tina, name: Tina Techlead, roles: [technical_lead], email: tina@example.org}}
notify:
  channels:
    mail: {{kind: email, host: 127.0.0.1, port: {closed_port()}}}
    chat: {{kind: slack, url: "https://hooks.slack.example/services/T01/B02/x", team_wide: true}}
probes: []
""",
        store.url,
    )


def _open(store: Store, settings: Settings, now: float) -> int:
    with store.begin() as conn:
        return incidents.open_incident(
            conn, settings, title="Checkout is down", severity=1, now=now, origin="declared"
        )


def _outbox(store: Store, incident_id: int) -> list[dict]:
    with store.connect() as conn:
        rows = conn.execute(
            select(t.outbox).where(t.outbox.c.incident_id == incident_id).order_by(t.outbox.c.id)
        ).mappings()
        return [dict(r) for r in rows]


def _events(store: Store, incident_id: int, kind: str) -> list[dict]:
    with store.connect() as conn:
        return [e for e in incidents.timeline(conn, incident_id) if e["kind"] == kind]


# ---------------------------------------------------------------------------- service


def test_send_custom_queues_the_edited_text_and_records_who_sent_it(
    sqlite_store: Store, clock: FakeClock
) -> None:
    settings = _settings(sqlite_store)
    incident_id = _open(sqlite_store, settings, clock.now())
    with sqlite_store.begin() as conn:
        result = notifications.send_custom(
            conn,
            settings,
            incident_id,
            kind="customer_notice",
            subject="Checkout is slow",
            body="We are on it. Next update at 10:00.",
            to="contact:olga",
            actor="rita",
            now=clock.now(),
        )
    rows = _outbox(sqlite_store, incident_id)
    assert result["queued"] == 2 == len(rows)
    mail = next(r for r in rows if r["channel"] == "mail")
    assert (mail["contact"], mail["address"]) == ("olga", "olga@example.org")
    assert mail["subject"] == "Checkout is slow"
    assert mail["body"] == "We are on it. Next update at 10:00."
    assert mail["kind"] == "customer_notice" and mail["status"] == "pending"
    chat = next(r for r in rows if r["channel"] == "chat")
    assert chat["body"].startswith("We are on it.") and "@olga" in chat["body"]

    [event] = _events(sqlite_store, incident_id, "notification_queued")
    assert event["actor"] == "rita"
    # queued, not sent: the mail channel's server is down, and the sender's own entry says so
    assert event["message"] == "customer notice edited and queued for Olga Oncall via chat, mail"


def test_sending_the_same_text_twice_sends_it_twice_and_notified_means_who_heard(
    sqlite_store: Store, clock: FakeClock
) -> None:
    settings = _settings(sqlite_store)
    incident_id = _open(sqlite_store, settings, clock.now())
    for to in ("role:technical_lead", "notified"):
        with sqlite_store.begin() as conn:
            notifications.send_custom(
                conn,
                settings,
                incident_id,
                kind="status_update",
                subject="Update",
                body="Still investigating.",
                to=to,
                actor="rita",
                now=clock.now(),
            )
    mails = [r for r in _outbox(sqlite_store, incident_id) if r["channel"] == "mail"]
    # tina heard the first one, so she is "everyone notified so far" for the second
    assert [r["contact"] for r in mails] == ["tina", "tina"]
    messages = [e["message"] for e in _events(sqlite_store, incident_id, "notification_queued")]
    assert "queued for role technical_lead" in messages[0]
    assert "queued for everyone notified so far" in messages[1]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"kind": "resolved"}, "kind"),
        ({"to": "contact:nobody"}, "to"),
        ({"to": "role:ghostbuster"}, "to"),
        ({"to": "everyone"}, "to"),
        ({"subject": "   "}, "subject"),
        ({"body": ""}, "body"),
    ],
)
def test_send_custom_refuses_bad_input_naming_the_field(
    sqlite_store: Store, clock: FakeClock, changes: dict, field: str
) -> None:
    settings = _settings(sqlite_store)
    incident_id = _open(sqlite_store, settings, clock.now())
    args = {"kind": "status_update", "subject": "s", "body": "b", "to": "notified"} | changes
    with pytest.raises(incidents.IncidentError) as caught, sqlite_store.begin() as conn:
        notifications.send_custom(
            conn, settings, incident_id, **args, actor="rita", now=clock.now()
        )
    assert caught.value.field == field
    assert _outbox(sqlite_store, incident_id) == []


# ---------------------------------------------------------------------------- page and API


@dataclass
class Site:
    client: TestClient
    store: Store
    incident_id: int


@pytest.fixture
def site(sqlite_store: Store, clock: FakeClock, fast_hashing: None) -> Iterator[Site]:  # noqa: F811
    settings = _settings(sqlite_store)
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    add_user(sqlite_store, clock, "rita", "responder")
    add_user(sqlite_store, clock, "vic", "viewer")
    incident_id = _open(sqlite_store, settings, clock.now())
    with TestClient(app) as client:
        yield Site(client, sqlite_store, incident_id)


def test_responders_get_prefilled_forms_and_viewers_do_not(site: Site) -> None:
    c, incident_id = site.client, site.incident_id
    login(c, "rita")
    html = c.get(f"/incidents/{incident_id}", headers=HTML).text
    for kind in notifications.EDITABLE_KINDS:
        assert f'id="message-form-{kind}"' in html
    assert 'id="subject-customer_notice"' in html and "Checkout is down" in html
    assert '<option value="role:technical_lead">' in html
    assert '<option value="contact:olga">Olga Oncall</option>' in html
    assert 'class="flash error"' not in html  # every editable template rendered

    c.cookies.clear()
    login(c, "vic")
    html = c.get(f"/incidents/{incident_id}", headers=HTML).text
    assert "message-form-" not in html
    assert 'data-template="customer_notice"' in html  # the read-only preview stays


def test_the_page_form_sends_with_csrf_and_is_refused_without(site: Site) -> None:
    c, incident_id = site.client, site.incident_id
    csrf = login(c, "rita")
    form = {
        "kind": "customer_notice",
        "subject": "Edited subject",
        "body": "Edited body for customers.",
        "to": "contact:tina",
    }
    refused = c.post(f"/incidents/{incident_id}/messages", data=form)
    assert refused.status_code == 403
    assert _outbox(site.store, incident_id) == []

    sent = c.post(
        f"/incidents/{incident_id}/messages",
        data=form | {"csrf_token": csrf},
        follow_redirects=False,
    )
    assert sent.status_code == 303
    assert sent.headers["location"] == f"/incidents/{incident_id}#timeline"
    mail = next(r for r in _outbox(site.store, incident_id) if r["channel"] == "mail")
    assert (mail["contact"], mail["subject"]) == ("tina", "Edited subject")
    assert mail["body"] == "Edited body for customers."
    timeline = c.get(f"/incidents/{incident_id}", headers=HTML).text
    assert "customer notice edited and queued for Tina Techlead" in timeline

    # a refusal renders the page again with the message and keeps what was typed
    again = c.post(
        f"/incidents/{incident_id}/messages",
        data=form | {"csrf_token": csrf, "to": "contact:nobody"},
    )
    assert again.status_code == 422
    assert "no contact &#39;nobody&#39;" in again.text or "no contact 'nobody'" in again.text
    assert "Edited body for customers." in again.text


def test_viewers_cannot_send(site: Site) -> None:
    csrf = login(site.client, "vic")
    response = site.client.post(
        f"/incidents/{site.incident_id}/messages",
        data={"kind": "status_update", "subject": "s", "body": "b", "csrf_token": csrf},
    )
    assert response.status_code == 403
    assert _outbox(site.store, site.incident_id) == []


def test_the_api_sends_the_same_way(site: Site, clock: FakeClock) -> None:
    token = admin_token(site.store, clock.now(), role="responder")
    auth = {"Authorization": f"Bearer {token}"}
    url = f"/api/v1/incidents/{site.incident_id}/messages"
    body = {
        "kind": "emergency_notification",
        "subject": "S1",
        "body": "All hands.",
        "to": "role:oncall_engineer",
    }
    response = site.client.post(url, json=body, headers=auth)
    assert response.status_code == 201, response.text
    assert response.json()["queued"] == 2
    mail = next(r for r in _outbox(site.store, site.incident_id) if r["channel"] == "mail")
    assert (mail["contact"], mail["subject"], mail["body"]) == ("olga", "S1", "All hands.")
    [event] = _events(site.store, site.incident_id, "notification_queued")
    assert event["actor"] == "token:test-responder"

    bad = site.client.post(url, json=body | {"to": "contact:nobody"}, headers=auth)
    assert (bad.status_code, bad.json()["field"]) == (422, "to")
    bad = site.client.post(url, json=body | {"kind": "resolved"}, headers=auth)
    assert (bad.status_code, bad.json()["field"]) == (422, "kind")
    missing = site.client.post("/api/v1/incidents/999/messages", json=body, headers=auth)
    assert missing.status_code == 404
