"""The timeline reads as sentences: every event kind an incident goes through, in its words.

"runbook X dry run of by root" and "confirmed by alice2026-12-07" were sentences put together
carelessly (a verb phrase with a hole in it; a template whose trimmed newline glued two parts).
One incident goes through declare, pages, acknowledge, update, severity, assign, escalate,
note, runbooks (a dry run and a run with a confirmed manual step), checklist skip, resolve,
reopen, resolve and close; each kind's message is pinned, and every message of every kind is
checked for the shapes of those slips. The runbooks panel's step line is read as text.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nachtwacht.checklist.gate import resolution_gate
from nachtwacht.clock import FakeClock
from nachtwacht.incidents import escalation
from nachtwacht.incidents import service as incidents
from nachtwacht.runbooks.runner import Policy, Runner, Who
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.auth_helpers import add_user, fast_hashing, login  # noqa: F401 - fixture
from tests.test_runbooks_runner import people_extra, user_runbook
from tests.test_runbooks_sandbox import (
    Sandbox,
    declare,
    sandbox_fixture,  # noqa: F401 - the `sandbox` fixture
    timeline,
)

RUNBOOK = """
title: Check and confirm
steps:
  - {id: look, kind: check, command: "true"}
  - {id: confirm, title: Site works in a browser, kind: manual, instruction: Open the site.}
"""

# the slips: a preposition with nothing after it, a name glued to a date or a number, a
# doubled or dangling separator, an empty slot
SLIPS = [
    re.compile(r"\b(of|by|for|to|at|after|via) (by|of|to|for|at)\b"),
    re.compile(r"\b(by|for|to) [:;,)]"),
    re.compile(r"[a-z]\d{4}-\d\d-\d\d"),
    re.compile(r"  |\s[,;:]|[,;:]$|\(\)|: *$|\bNone\b|\{|\}"),
]


def _slips(text: str) -> list[str]:
    return [p.pattern for p in SLIPS if p.search(text)]


@pytest.fixture
def flow(
    sqlite_store: Store,
    clock: FakeClock,
    sandbox: Sandbox,
    tmp_path: Path,
    fast_hashing: None,  # noqa: F811
) -> Iterator[tuple[TestClient, int]]:
    runbooks = tmp_path / "runbooks"
    user_runbook(runbooks, "confirm", RUNBOOK)
    settings = sandbox.settings(sqlite_store, extra=people_extra(), runbooks=runbooks)
    store = sqlite_store
    incident_id = declare(store, settings, clock)
    runner = Runner(store, settings, clock)
    rita = Who("rita", "responder")

    def step(seconds: float) -> float:
        clock.advance(seconds)
        return clock.now()

    with store.begin() as conn:
        incidents.acknowledge(conn, incident_id, "rita", step(120))
        escalation.post_update(
            conn, settings, incident_id, "rita", step(60), "pool restarted", "mitigating"
        )
        incidents.set_severity(conn, settings, incident_id, 2, "rita", step(60), "checkout works")
        incidents.assign(conn, incident_id, "tina", "commander", "rita", step(60))
        escalation.escalate_now(conn, settings, incident_id, "rita", step(60), "db still slow")
        incidents.add_note(conn, incident_id, "rita", step(60), "looked at the slow query log")
    step(60)
    asyncio.run(
        runner.start("confirm", who=Who("root", "admin"), incident_id=incident_id, dry_run=True)
    )
    asyncio.run(
        runner.start("confirm", who=rita, incident_id=incident_id, policy=Policy(manual="yes"))
    )
    with store.begin() as conn:
        escalation.resolve(
            conn,
            settings,
            incident_id,
            "rita",
            step(60),
            "fixed",
            gate=resolution_gate,
            skip_checklist="checked by hand",
        )
        incidents.set_status(conn, incident_id, "investigating", "rita", step(60), "back again")
        escalation.resolve(
            conn,
            settings,
            incident_id,
            "rita",
            step(60),
            "fixed for real",
            gate=resolution_gate,
            skip_checklist="checked by hand",
        )
        incidents.set_status(conn, incident_id, "closed", "tina", step(60))
    app = create_app(settings, store, clock, start_engine=False)
    add_user(store, clock, "rita", "responder")
    with TestClient(app) as client:
        login(client, "rita")
        yield client, incident_id


# (kind, actor, message) in the order they happen; one line per kind at least
EXPECTED = [
    ("declared", "nachtwacht", "S1 incident declared: Site down"),
    (
        "escalated",
        "nachtwacht",
        "Initial response and stabilisation: on-call engineer; notifies oncall",
    ),
    ("notification_queued", "nachtwacht", "page queued for Olga Oncall via chat, mail"),
    ("acknowledged", "rita", "acknowledged by rita after 2 min"),
    ("notification_withdrawn", "rita", "2 queued pages withdrawn: acknowledged by rita"),
    ("status", "rita", "status investigating → mitigating"),
    ("update", "rita", "pool restarted"),
    ("severity", "rita", "severity S1 → S2: checkout works"),
    ("assigned", "rita", "tina is commander"),
    ("note", "rita", "manual escalation: db still slow"),
    (
        "escalated",
        "nachtwacht",
        "Technical lead notification, escalated by rita: db still slow; "
        "notifies role:technical_lead",
    ),
    (
        "notification_queued",
        "nachtwacht",
        "notification queued for Tina Techlead via chat, mail",
    ),
    ("note", "rita", "looked at the slow query log"),
    (
        "runbook",
        "root",
        "runbook confirm dry run by root: Check and confirm (2 steps; nothing ran)",
    ),
    ("runbook", "rita", "runbook confirm started by rita: Check and confirm (2 steps)"),
    ("runbook_step", "rita", "runbook confirm step 1 look (check): ok"),
    ("runbook_step", "rita", "runbook confirm step 2 confirm (manual): ok; confirmed by rita"),
    ("runbook", "rita", "runbook confirm succeeded: completed"),
    ("checklist_skipped", "rita", "restoration checklist skipped: checked by hand"),
    ("resolved", "rita", "status mitigating → resolved: fixed"),
    ("notification_withdrawn", "rita", "2 queued pages withdrawn: resolved by rita"),
    ("note", "nachtwacht", "no resolved notice: nobody was notified"),
    ("reopened", "rita", "status resolved → investigating: back again"),
    ("checklist_skipped", "rita", "restoration checklist skipped: checked by hand"),
    ("resolved", "rita", "status investigating → resolved: fixed for real"),
    ("note", "nachtwacht", "no resolved notice: nobody was notified"),
    ("closed", "tina", "status resolved → closed"),
]


def test_every_event_kind_reads_as_a_sentence(flow: tuple[TestClient, int]) -> None:
    client, incident_id = flow
    store = client.app.state.nw.runtime.store
    events = timeline(store, incident_id)
    assert [(e["kind"], e["actor"], e["message"]) for e in events] == EXPECTED
    for e in events:
        assert _slips(e["message"]) == [], e["message"]


def _text(html: str) -> str:
    """What a reader sees: tags gone, runs of white space one space."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html))


def test_the_page_shows_the_same_sentences_with_spaces_between_their_parts(
    flow: tuple[TestClient, int],
) -> None:
    client, incident_id = flow
    seen = _text(client.get(f"/ui/incidents/{incident_id}/timeline").text)
    assert "dry run by root: Check and confirm (2 steps; nothing ran)" in seen
    assert "dry run of" not in seen
    panel = _text(client.get(f"/ui/incidents/{incident_id}/runbooks").text)
    # the manual step: who confirmed it, then when, not "rita2026-..."
    assert re.search(r"2\. confirm manual confirmed by rita at \d{4}-\d\d-\d\d", panel), panel
    assert not re.search(r"[a-z]\d{4}-\d\d-\d\d", panel)
