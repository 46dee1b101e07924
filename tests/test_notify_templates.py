"""Templates say what the protocol's say; compose makes one message per delivery."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nachtwacht.notify.compose import compose
from nachtwacht.notify.templates import KINDS, TemplateError, render
from tests.notify_helpers import settings

NOW = 1_800_000_000.0  # 2027-01-15 09:00 CET (Amsterdam)

SITE = """
site: leden.example.org
people:
  contacts:
    - {id: alice, name: Alice Jansen, roles: [oncall_engineer], email: alice@example.org,
       phone: "+31600000001", chat: "@alice"}
    - {id: bob, name: Bob de Vries, roles: [technical_lead], email: bob@example.org,
       chat: "@bob"}
    - {id: carol, name: Carol Chat, roles: [devops], chat: "@carol"}
    - {id: mark, name: Mark Manager, roles: [operations_manager], phone: "+31600000009"}
incidents:
  public_url: https://nw.example.org/
notify:
  channels:
    mail: {kind: email}
    text: {kind: sms, url: "http://127.0.0.1:9/sms", max_length: 160}
    ops: {kind: slack, url: "http://127.0.0.1:9/slack"}
    hook: {kind: webhook, url: "http://127.0.0.1:9/hook"}
"""


@pytest.fixture
def cfg() -> Any:
    return settings(SITE)


def incident(**over: Any) -> dict[str, Any]:
    row = {
        "id": 12,
        "title": "Database unreachable",
        "severity": 1,
        "status": "investigating",
        "component": "database",
        "impact": "Members cannot log in",
        "commander": "bob",
        "started_at": NOW - 120,
        "detected_at": NOW - 60,
        "acknowledged_at": None,
        "acknowledged_by": None,
        "response_due_at": NOW - 60 + 900,
        "update_due_at": NOW + 1800,
        "resolved_at": None,
        "ack_token": "tok-123",
    }
    row.update(over)
    return row


def people(cfg: Any, *ids: str) -> list[Any]:
    return [cfg.people.contact(i) for i in ids]


def only(messages: list[Any], channel: str) -> list[Any]:
    return [m for m in messages if m.channel == channel]


def test_emergency_alert_is_the_protocols_block_with_ack_link_and_deadline(cfg: Any) -> None:
    msgs = compose(
        cfg,
        kind="emergency_alert",
        key="inc12:page0",
        incident=incident(commander=None),
        contacts=people(cfg, "alice"),
        now=NOW,
    )
    mail = only(msgs, "mail")[0]
    assert mail.subject.startswith("EMERGENCY ALERT - S1 Critical - leden.example.org")
    lines = mail.body.splitlines()
    assert lines[:6] == [
        "EMERGENCY ALERT - S1 (Critical)",
        "System: leden.example.org",
        "Issue: Database unreachable",
        "Impact: Members cannot log in",
        "Responder: Alice Jansen",
        "Time: 2027-01-15 09:00 CET",  # the site's timezone, not UTC
    ]
    assert "Respond by: 2027-01-15 09:14 CET (15 minutes, at any hour)" in lines
    assert "Acknowledge: https://nw.example.org/ack/tok-123" in lines
    assert mail.payload["ack_url"] == "https://nw.example.org/ack/tok-123"


def test_emergency_notification_lists_actions_status_next_update_and_commander(cfg: Any) -> None:
    timeline = [
        {"kind": "detected", "message": "S1 incident opened"},
        {"kind": "note", "message": "restarted mariadb"},
        {"kind": "status", "message": "status investigating → mitigating: failing over"},
        {"kind": "notification_sent", "message": "page sent to alice by mail"},
    ]
    [mail] = only(
        compose(
            cfg,
            kind="emergency_notification",
            key="k",
            incident=incident(status="mitigating", acknowledged_at=NOW, acknowledged_by="alice"),
            contacts=people(cfg, "bob"),
            context={"timeline": timeline, "estimated_resolution": "10:30"},
            now=NOW,
        ),
        "mail",
    )
    assert mail.subject == "[S1] - leden.example.org Emergency: Database unreachable"
    body = mail.body
    assert "INCIDENT DETAILS:\n- Incident: #12\n- Time: 2027-01-15 08:59 CET" in body
    assert "- Estimated Resolution: 10:30" in body
    assert (
        "IMMEDIATE ACTIONS TAKEN:\n- restarted mariadb\n"
        "- status investigating → mitigating: failing over\n" in body
    )
    assert "page sent to alice" not in body  # deliveries are not actions
    assert "CURRENT STATUS:\nMitigating; acknowledged by alice." in body
    assert "NEXT UPDATE: 2027-01-15 09:30 CET" in body
    assert "INCIDENT COMMANDER: Bob de Vries" in body
    assert "Acknowledge: https://nw.example.org/ack/tok-123" in body


def test_status_update_subject_names_incident_and_status(cfg: Any) -> None:
    [mail] = only(
        compose(
            cfg,
            kind="status_update",
            key="k",
            incident=incident(status="monitoring"),
            contacts=people(cfg, "bob"),
            context={"progress": "replica promoted", "next_steps": ["rebuild the old primary"]},
            now=NOW,
        ),
        "mail",
    )
    assert mail.subject == "UPDATE - #12 - Monitoring"
    assert "- Status: Monitoring\n- Progress: replica promoted" in mail.body
    assert "NEXT STEPS:\n- rebuild the old primary" in mail.body
    assert "Respond by:" in mail.body and "/ack/tok-123" in mail.body


def test_customer_notice_has_the_protocol_text_and_no_ack_link(cfg: Any) -> None:
    msgs = compose(
        cfg,
        kind="customer_notice",
        key="k",
        incident=incident(),
        contacts=people(cfg, "alice", "mark"),
        now=NOW,
    )
    mail = only(msgs, "mail")[0]
    assert "System Maintenance Notice" in mail.subject
    assert "We are currently experiencing technical issues with leden.example.org." in mail.body
    assert "We will provide updates every 30 minutes until resolved." in mail.body  # S1 cadence
    assert "For urgent matters, please contact: Bob de Vries (bob@example.org)" in mail.body
    assert all("/ack/" not in m.body for m in msgs)  # customers must not acknowledge pages


def test_resolved_and_reminder_and_test_render(cfg: Any) -> None:
    inc = incident(resolved_at=NOW + 3600, status="resolved")
    [res] = only(
        compose(cfg, kind="resolved", key="r", incident=inc, contacts=people(cfg, "bob"), now=NOW),
        "mail",
    )
    assert res.subject.startswith("RESOLVED - #12")
    assert "Duration: 1.0 hours" not in res.body and "Duration: 62 minutes" in res.body
    [rem] = only(
        compose(cfg, kind="reminder", key="m", incident=incident(), contacts=people(cfg, "bob")),
        "mail",
    )
    assert rem.subject == "REMINDER - #12 - status update overdue"
    assert "was due at 2027-01-15 09:30 CET" in rem.body
    [test] = only(
        compose(cfg, kind="test", key="t", incident=None, contacts=people(cfg, "alice"), now=NOW),
        "mail",
    )
    assert 'through the channel "mail" (email)' in test.body


def test_per_contact_channels_fan_out_and_broadcast_channels_post_once(cfg: Any) -> None:
    msgs = compose(
        cfg,
        kind="emergency_alert",
        key="inc12:page0",
        incident=incident(),
        contacts=people(cfg, "alice", "bob", "carol", "alice"),  # alice twice: one message
        now=NOW,
    )
    keys = sorted(m.idempotency_key for m in msgs)
    assert keys == [
        "inc12:page0:hook:*",
        "inc12:page0:mail:alice",
        "inc12:page0:mail:bob",
        "inc12:page0:ops:*",
        "inc12:page0:text:alice",  # only alice has a phone
    ]
    [chat] = only(msgs, "ops")
    assert chat.contact is None and chat.address is None
    assert chat.body.endswith("Paging: @alice @bob @carol")
    [hook] = only(msgs, "hook")
    assert hook.payload["incident_id"] == 12 and hook.payload["severity"] == 1
    assert [r["id"] for r in hook.payload["recipients"]] == ["alice", "bob", "carol"]
    assert {m.address for m in only(msgs, "mail")} == {"alice@example.org", "bob@example.org"}


def test_channel_targets_restrict_delivery_and_unknown_channels_are_refused(cfg: Any) -> None:
    msgs = compose(
        cfg,
        kind="emergency_alert",
        key="k",
        incident=incident(),
        contacts=[],
        channels=["ops"],
    )
    assert [m.idempotency_key for m in msgs] == ["k:ops:*"]
    with pytest.raises(ValueError, match="no notification channel named 'nope'"):
        compose(cfg, kind="test", key="k", incident=None, contacts=[], channels=["nope"])


def test_sms_is_cut_to_max_length_and_keeps_the_ack_link(cfg: Any) -> None:
    long_title = "Database unreachable from every application server " * 5
    [sms] = only(
        compose(
            cfg,
            kind="emergency_alert",
            key="k",
            incident=incident(title=long_title),
            contacts=people(cfg, "alice"),
            now=NOW,
        ),
        "text",
    )
    assert len(sms.body) <= 160
    assert sms.body.endswith(" Ack: https://nw.example.org/ack/tok-123")
    assert sms.address == "+31600000001"


def test_sms_of_a_page_says_when_to_respond(cfg: Any) -> None:
    [sms] = only(
        compose(
            cfg,
            kind="emergency_alert",
            key="k",
            incident=incident(),
            contacts=people(cfg, "alice"),
            now=NOW,
        ),
        "text",
    )
    assert "respond by Fri 09:14 CET" in sms.body


def test_composing_twice_gives_the_same_keys(cfg: Any) -> None:
    def keys() -> list[str]:
        return [
            m.idempotency_key
            for m in compose(
                cfg, kind="emergency_alert", key="inc12:page0", incident=incident(),
                contacts=people(cfg, "alice"), now=NOW,
            )
        ]  # fmt: skip

    assert keys() == keys()


def test_a_file_in_templates_dir_overrides_the_builtin_by_name(tmp_path: Path) -> None:
    (tmp_path / "emergency_alert.j2").write_text(
        "Subject: PAGE {{ incident.title }}\nWake up {{ recipient.name }}: {{ ack_url }}\n"
    )
    cfg = settings(
        SITE.replace("notify:\n", f"notify:\n  templates_dir: {tmp_path}\n"),
    )
    [mail] = only(
        compose(
            cfg, kind="emergency_alert", key="k", incident=incident(),
            contacts=people(cfg, "alice"), now=NOW,
        ),
        "mail",
    )  # fmt: skip
    assert mail.subject == "PAGE Database unreachable"
    assert mail.body == "Wake up Alice Jansen: https://nw.example.org/ack/tok-123"
    # kinds without an override still use the built-in templates
    subject, _ = render("status_update", {"incident": incident()}, str(tmp_path))
    assert subject == "UPDATE - #12 -"  # the built-in, with an empty context


def test_every_kind_has_a_builtin_template_and_unknown_kinds_say_so() -> None:
    for kind in KINDS:
        subject, body = render(kind, {"incident": incident(), "site": "s", "now": NOW})
        assert subject and body, kind
    with pytest.raises(TemplateError, match="no template 'nonsense.j2'"):
        render("nonsense", {})
