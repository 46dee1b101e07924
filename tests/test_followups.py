"""Follow-ups go where the policy sent the pages (issue 11 #7).

The policy pages the on-call engineer in her room, and brings the technical lead (and the
lead's room) in at 15 minutes. Status updates, reminders, runbook notices, the checklist's
test and the resolved notice go to the people and rooms paged so far, plus a room configured
`team_wide`; never to the lead's room before the lead was paged.
"""

from __future__ import annotations

from typing import Any

from nachtwacht.checklist import live_items
from nachtwacht.checklist.items import Context
from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import parse_config
from nachtwacht.incidents import escalation, notifications, service
from nachtwacht.notify.testmessage import queue_test
from nachtwacht.store.db import Store
from tests.incident_fixtures import deliver, events, fire_db, local, outbox, tick

NIGHT = local(2026, 12, 2, 3, 0)


def _site(store: Store) -> Any:
    return parse_config(
        f"""
store: {{url: "{store.url}"}}
site: shop
people:
  contacts:
    - {{id: olga, name: Olga Oncall, roles: [oncall_engineer], email: olga@example.org}}
    - {{id: tina, name: Tina Techlead, roles: [technical_lead], email: tina@example.org}}
notify:
  channels:
    mail: {{kind: email, host: 127.0.0.1, port: 9, starttls: false}}
    oncall-chat: {{kind: slack, url: "http://127.0.0.1:9/oncall"}}
    lead-hook: {{kind: webhook, url: "http://127.0.0.1:9/lead"}}
    ops-room: {{kind: mattermost, url: "http://127.0.0.1:9/ops", team_wide: true}}
incidents:
  update_every: {{1: 10m}}
  severity_policy: {{1: routed}}
  policies:
    routed:
      steps:
        - {{after: 0s, notify: [oncall, "channel:oncall-chat"], repeat: 5m}}
        - {{after: 15m, notify: ["role:technical_lead", "channel:lead-hook"]}}
probes: []
""",
        "followups.yaml",
    )


def _to(store: Store, kind: str, after: int = 0) -> set[str]:
    """Who and which rooms messages of this kind (queued after row id `after`) went to."""
    return {
        r["contact"] or r["channel"] for r in outbox(store) if r["kind"] == kind and r["id"] > after
    }


def _last_id(store: Store) -> int:
    return max((r["id"] for r in outbox(store)), default=0)


def test_follow_ups_reach_the_leads_room_only_once_the_lead_was_paged(
    store: Store, clock: FakeClock
) -> None:
    settings = _site(store)
    inc_id = fire_db(store, settings, NIGHT)
    assert _to(store, "emergency_alert") == {"olga", "oncall-chat"}
    deliver(store, NIGHT + 1)
    with store.begin() as conn:
        service.acknowledge(conn, inc_id, "olga", NIGHT + 30)
        escalation.post_update(conn, settings, inc_id, "olga", NIGHT + 60, "failing over")
    assert _to(store, "status_update") == {"olga", "oncall-chat", "ops-room"}

    mark = _last_id(store)
    with store.begin() as conn:  # a runbook's notice to everyone notified so far
        notifications.send_custom(
            conn,
            settings,
            inc_id,
            kind="status_update",
            subject="runbook: database failover",
            body="replica promoted",
            to="notified",
            actor="runbook",
            now=NIGHT + 120,
        )
    assert _to(store, "status_update", mark) == {"olga", "oncall-chat", "ops-room"}

    tick(store, settings, NIGHT + 11 * 60 + 1)  # the next update is overdue: a reminder
    assert _to(store, "reminder") == {"olga", "oncall-chat", "ops-room"}

    clock.set(NIGHT + 12 * 60)
    ctx = Context(settings, store, clock, "tester", incident_id=inc_id)
    # the restoration checklist's alert test: to the rooms the incident's pages reached
    routes = live_items._routes(ctx)
    ids = queue_test(settings, store, "olga", clock.now(), prefix="checklist", routes=routes)
    assert {r["contact"] or r["channel"] for r in outbox(store) if r["id"] in ids} == {
        "olga",
        "oncall-chat",
        "ops-room",
    }

    tick(store, settings, NIGHT + 15 * 60)  # the technical lead and the lead's room
    assert _to(store, "emergency_notification") == {"tina", "lead-hook"}
    deliver(store, NIGHT + 15 * 60 + 1)
    mark = _last_id(store)
    with store.begin() as conn:
        escalation.post_update(conn, settings, inc_id, "olga", NIGHT + 16 * 60, "data intact")
    assert _to(store, "status_update", mark) == {
        "olga",
        "tina",
        "oncall-chat",
        "lead-hook",
        "ops-room",
    }


def test_the_resolved_notice_skips_rooms_never_paged_and_says_who_heard_it(store: Store) -> None:
    settings = _site(store)
    inc_id = fire_db(store, settings, NIGHT)
    deliver(store, NIGHT + 1)
    with store.begin() as conn:
        escalation.resolve(conn, settings, inc_id, "olga", NIGHT + 300, "replica promoted")
    resolved = [r for r in outbox(store) if r["kind"] == "resolved"]
    assert {r["contact"] or r["channel"] for r in resolved} == {"olga", "oncall-chat", "ops-room"}
    for r in resolved:
        assert (
            "This notice went to: Olga Oncall (and posted to oncall-chat, ops-room)" in r["body"]
        ), r["body"]
    queued = [m for k, m in events(store, inc_id) if k == "notification_queued"]
    assert queued[-1] == "resolved notice queued for Olga Oncall via mail, oncall-chat, ops-room"


def test_an_ack_keeps_the_leads_escalation_step_and_the_lead_hears_what_follows(
    store: Store,
) -> None:
    """The lead's step is how the lead learns of the incident: an ack does not withdraw it
    (the sender adds the acknowledgement to it), so the lead is among those notified."""
    settings = _site(store)
    inc_id = fire_db(store, settings, NIGHT)
    deliver(store, NIGHT + 1)
    tick(store, settings, NIGHT + 15 * 60)  # the lead's step is queued ...
    with store.begin() as conn:  # ... and still queued when olga acknowledges
        service.acknowledge(conn, inc_id, "olga", NIGHT + 15 * 60 + 5)
        escalation.post_update(conn, settings, inc_id, "olga", NIGHT + 16 * 60, "on it")
    lead = [r for r in outbox(store) if r["kind"] == "emergency_notification"]
    assert lead and all(r["status"] == "pending" for r in lead)
    assert _to(store, "status_update") == {"olga", "tina", "oncall-chat", "ops-room", "lead-hook"}


def test_an_ack_withdraws_only_the_queued_repeat_page(store: Store) -> None:
    settings = _site(store)
    inc_id = fire_db(store, settings, NIGHT)
    deliver(store, NIGHT + 1)
    tick(store, settings, NIGHT + 5 * 60)  # page 2 is queued to olga and the rooms ...
    with store.begin() as conn:  # ... and withdrawn by the ack before it went out
        service.acknowledge(conn, inc_id, "olga", NIGHT + 5 * 60 + 5)
    withdrawn = [r for r in outbox(store) if r["status"] == "cancelled"]
    assert withdrawn and all(":page2:" in r["idempotency_key"] for r in withdrawn)
