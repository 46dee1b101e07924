"""The runner: retries and escalation, refusal of unconfirmed destructive steps, pauses at
manual steps, wait_for on a fast-forwarded clock, the timeline, masking, flags, notifications.

Real stores (all three backends where the store matters), real subprocesses through the
sandbox's stand-ins (see test_runbooks_sandbox.py), a FakeClock for every wait.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from nachtwacht.clock import FakeClock
from nachtwacht.runbooks import service
from nachtwacht.runbooks.runner import Policy, RunError, Runner, Who
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.incident_fixtures import SITE
from tests.test_runbooks_sandbox import (
    API_SECRET,
    DB_PASSWORD,
    Sandbox,
    all_outputs,
    declare,
    run,
    sandbox_fixture,  # noqa: F401 - the `sandbox` fixture
    timeline,
)


def user_runbook(directory: Path, name: str, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.yaml").write_text(text, encoding="utf-8")


def people_extra() -> str:
    """The incident fixtures' people (a technical lead, ...) and notification channels."""
    return SITE.split("probes:")[0].replace("site: vereniging\n", "")


def test_a_restart_failing_three_times_escalates_the_incident(
    store: Store, clock: FakeClock, sandbox: Sandbox
) -> None:
    settings = sandbox.settings(store, extra=people_extra())
    incident_id = declare(store, settings, clock)
    with store.connect() as conn:
        before = conn.execute(
            select(t.incidents.c.next_step).where(t.incidents.c.id == incident_id)
        ).scalar()
    sandbox.fail("systemctl", "restart nginx")
    started = clock.now()

    view = run(store, settings, clock, "monitoring-failure", incident_id=incident_id)

    assert view["status"] == "escalated"
    restart = next(s for s in view["steps"] if s["id"] == "restart-web")
    assert (restart["status"], restart["attempts"], restart["exit_code"]) == ("failed", 3, 1)
    assert restart["confirmed_by"] == "rita"
    assert restart["output"].count("--- attempt") == 3
    assert [c for c in sandbox.calls() if c.startswith("systemctl restart")] == [
        "systemctl restart nginx"
    ] * 3
    # two retry delays of 10 s passed on the clock, not in real time
    assert clock.now() - started == pytest.approx(20.0)
    # the run stopped there: the database was not restarted
    assert "restart-database" not in [s["id"] for s in view["steps"]]
    events = timeline(store, incident_id)
    reason = "runbook monitoring-failure step 7 restart-web failed after 3 attempt(s)"
    assert ("note", f"manual escalation: {reason}") in [(e["kind"], e["message"]) for e in events]
    escalated = [e for e in events if e["kind"] == "escalated"]
    assert escalated[-1]["data"]["reason"] == f"escalated by rita: {reason}"
    assert escalated[-1]["data"]["targets"] == ["role:technical_lead"]
    with store.connect() as conn:
        after = conn.execute(
            select(t.incidents.c.next_step).where(t.incidents.c.id == incident_id)
        ).scalar()
        pages = conn.execute(
            select(t.outbox.c.contact, t.outbox.c.kind).where(t.outbox.c.incident_id == incident_id)
        ).all()
    assert after == before + 1
    assert ("tina", "emergency_notification") in [(p.contact, p.kind) for p in pages]


def test_a_destructive_step_is_refused_without_confirmation(
    store: Store, clock: FakeClock, sandbox: Sandbox
) -> None:
    settings = sandbox.settings(store)
    incident_id = declare(store, settings, clock)

    view = run(
        store,
        settings,
        clock,
        "monitoring-failure",
        incident_id=incident_id,
        policy=Policy(destructive="no", manual="yes"),
    )

    assert view["status"] == "refused"
    refused = view["steps"][-1]
    assert (refused["id"], refused["status"], refused["confirmed_by"]) == (
        "restart-web",
        "refused",
        None,
    )
    assert "not confirmed" in refused["output"]
    assert not [c for c in sandbox.calls() if "restart" in c]
    kinds = [
        (e["kind"], e["data"].get("status") if e["data"] else None)
        for e in timeline(store, incident_id)
    ]
    assert ("runbook_step", "refused") in kinds and ("runbook", "refused") in kinds


def test_a_viewer_cannot_run_a_destructive_step_even_when_confirming(
    sqlite_store: Store, clock: FakeClock, sandbox: Sandbox
) -> None:
    settings = sandbox.settings(sqlite_store)
    view = run(
        sqlite_store,
        settings,
        clock,
        "monitoring-failure",
        who=Who("vic", "viewer"),
        policy=Policy(destructive="yes", manual="yes"),
    )
    assert view["status"] == "refused"
    assert "needs the responder role; vic is viewer" in view["steps"][-1]["output"]
    assert not [c for c in sandbox.calls() if "restart" in c]


def test_steps_appear_on_the_timeline_in_order_with_their_results(
    store: Store, clock: FakeClock, sandbox: Sandbox
) -> None:
    settings = sandbox.settings(store)
    incident_id = declare(store, settings, clock)
    view = run(store, settings, clock, "database-emergency", incident_id=incident_id)
    assert view["status"] == "succeeded"
    events = [e for e in timeline(store, incident_id) if e["kind"].startswith("runbook")]
    assert events[0]["kind"] == "runbook" and "started by rita" in events[0]["message"]
    assert events[-1]["kind"] == "runbook" and "succeeded" in events[-1]["message"]
    steps = events[1:-1]
    assert [e["data"]["step"] for e in steps] == list(range(len(view["steps"])))
    assert all(e["data"]["run_id"] == view["id"] for e in events)
    restart = next(e for e in steps if e["data"]["name"] == "restart-database")
    assert restart["message"] == (
        "runbook database-emergency step 6 restart-database (command, destructive): ok; "
        "confirmed by rita"
    )
    repair = next(e for e in steps if e["data"]["name"] == "repair-tables")
    assert repair["data"]["status"] == "skipped"
    # the evidence step recorded its bundle on the timeline too
    evidence = [e for e in timeline(store, incident_id) if e["kind"] == "evidence"]
    assert len(evidence) == 1 and len(evidence[0]["data"]["manifest_sha256"]) == 64


def test_a_run_pauses_at_a_manual_step_and_resumes_when_confirmed(
    store: Store, clock: FakeClock, sandbox: Sandbox
) -> None:
    settings = sandbox.settings(store)
    incident_id = declare(store, settings, clock)
    view = run(
        store,
        settings,
        clock,
        "immediate-response",
        incident_id=incident_id,
        policy=Policy(destructive="no", manual="pause"),
    )
    assert view["status"] == "waiting" and view["next_step"] == 4
    assert view["steps"][-1]["id"] == "document-assessment"
    assert view["steps"][-1]["status"] == "waiting"
    runner = Runner(store, settings, clock)
    clock.advance(120)
    asyncio.run(
        runner.resume(view["id"], who=Who("olga", "responder"), policy=Policy(manual="pause"))
    )
    with store.connect() as conn:
        after = service.run_view(conn, view["id"])
    done = after["steps"][3]
    assert (done["status"], done["confirmed_by"]) == ("ok", "olga")
    assert done["started_at"] == view["steps"][3]["started_at"]  # since it was shown
    assert after["status"] == "waiting" and after["next_step"] == 5  # the next manual step

    # two responders pressing the same button: the run is claimed once, the other hears 409
    async def both() -> list[object]:
        one = runner.resume(view["id"], who=Who("olga", "responder"), action="skip")
        two = runner.resume(view["id"], who=Who("bert", "responder"), action="skip")
        return await asyncio.gather(one, two, return_exceptions=True)

    outcomes = asyncio.run(both())
    errors = [o for o in outcomes if isinstance(o, RunError)]
    assert len(errors) == 1 and errors[0].http_status == 409
    with store.connect() as conn:
        skipped = service.run_view(conn, view["id"])["steps"][4]
    assert skipped["status"] == "skipped" and skipped["confirmed_by"] in ("olga", "bert")


def test_wait_for_checks_until_the_probe_is_ok_on_a_fast_forwarded_clock(
    sqlite_store: Store, clock: FakeClock, sandbox: Sandbox, tmp_path: Path
) -> None:
    counter = tmp_path / "count"
    counter.write_text("0")
    # a command probe that turns ok on its third check
    probe = (
        f"  - {{name: flappy, kind: command, component: app, command: "
        f"[sh, -c, 'n=$(($(cat {counter}) + 1)); echo $n > {counter}; [ $n -ge 3 ]']}}\n"
        f"  - {{name: never, kind: command, component: dead, command: [sh, -c, 'exit 2']}}\n"
    )
    runbooks = tmp_path / "runbooks"
    user_runbook(
        runbooks,
        "wait",
        """
title: Wait for recovery
steps:
  - {id: recovers, kind: wait_for, probe: flappy, interval: 30s, deadline: 10m}
  - {id: stays-down, kind: wait_for, probe: "component:dead", interval: 1m, deadline: 5m,
     on_failure: continue}
""",
    )
    settings = sandbox.settings(sqlite_store, extra=probe, runbooks=runbooks)
    t0 = clock.now()
    view = run(sqlite_store, settings, clock, "wait")
    recovers, stays = view["steps"]
    assert (recovers["status"], recovers["attempts"]) == ("ok", 3)
    assert "ok after 3 check(s), 60s" in recovers["output"]
    # 60 s to recover, then checks at 0, 60, ..., 300 s of the second wait: 6 checks
    assert (stays["status"], stays["attempts"]) == ("failed", 6)
    assert "not ok after 300s (6 checks)" in stays["output"]
    assert clock.now() - t0 == pytest.approx(360.0)
    # the last wait_for is the run's final verification: it failing fails the run
    assert view["status"] == "failed"
    assert view["summary"] == (
        "completed, 1 of 2 steps failed, the final check 2 stays-down (stays-down) failed"
    )


def test_failed_steps_show_in_the_run_even_when_the_final_check_passes(
    sqlite_store: Store, clock: FakeClock, sandbox: Sandbox, tmp_path: Path
) -> None:
    runbooks = tmp_path / "runbooks"
    user_runbook(
        runbooks,
        "leaky",
        """
title: Some steps fail
steps:
  - {id: one, kind: check, command: "false", on_failure: continue}
  - {id: two, kind: check, command: "false", on_failure: continue}
  - {id: fine, kind: check, command: "true"}
  - {id: verify, title: Probes back to ok, kind: check, command: "true"}
""",
    )
    settings = sandbox.settings(sqlite_store, runbooks=runbooks)
    incident_id = declare(sqlite_store, settings, clock)
    view = run(sqlite_store, settings, clock, "leaky", incident_id=incident_id)
    assert view["status"] == "partly_failed"
    assert view["summary"] == "completed, 2 of 4 steps failed"
    last = timeline(sqlite_store, incident_id)[-1]
    assert last["message"] == "runbook leaky partly failed: completed, 2 of 4 steps failed"


def test_a_run_whose_final_probe_check_fails_fails(
    sqlite_store: Store, clock: FakeClock, sandbox: Sandbox, tmp_path: Path
) -> None:
    runbooks = tmp_path / "runbooks"
    user_runbook(
        runbooks,
        "unrecovered",
        """
title: Still down at the end
steps:
  - {id: one, kind: check, command: "false", on_failure: continue}
  - {id: fine, kind: check, command: "true"}
  - {id: verify, title: Probes back to ok, kind: check, command: "false", on_failure: continue}
""",
    )
    settings = sandbox.settings(sqlite_store, runbooks=runbooks)
    view = run(sqlite_store, settings, clock, "unrecovered")
    assert view["status"] == "failed"
    assert view["summary"] == (
        "completed, 2 of 3 steps failed, the final check 3 verify (Probes back to ok) failed"
    )


def test_secrets_are_masked_in_stored_output_and_on_the_timeline(
    sqlite_store: Store, clock: FakeClock, sandbox: Sandbox, tmp_path: Path
) -> None:
    runbooks = tmp_path / "runbooks"
    user_runbook(
        runbooks,
        "leaky",
        """
title: Prints its secrets
steps:
  - id: echo
    kind: command
    command: "echo token={{ api_secret }}; echo {{ db_password }}; echo {{ database_url }}"
  - id: env
    kind: command
    command: 'echo "pw is $MYSQL_PWD"'
    env: {MYSQL_PWD: "{{ db_password }}"}
""",
    )
    settings = sandbox.settings(sqlite_store, runbooks=runbooks)
    incident_id = declare(sqlite_store, settings, clock)
    view = run(sqlite_store, settings, clock, "leaky", incident_id=incident_id)
    assert view["status"] == "succeeded"
    echo, env = view["steps"]
    # the command really got the secrets (its output had them), the record does not
    assert "token=••••••" in echo["output"]
    assert "mysql+pymysql://shop:••••••@127.0.0.1" in echo["output"]
    assert "pw is ••••••" in env["output"]
    assert API_SECRET not in all_outputs(sqlite_store)
    assert DB_PASSWORD not in all_outputs(sqlite_store)


def test_set_flag_writes_the_flag_and_audits_it(
    store: Store, clock: FakeClock, sandbox: Sandbox
) -> None:
    settings = sandbox.settings(store)
    view = run(store, settings, clock, "analytics-failure")
    assert view["status"] == "succeeded"
    with store.connect() as conn:
        flag = conn.execute(
            select(t.flags).where(t.flags.c.name == "disable_advanced_analytics")
        ).one()
        audit = conn.execute(select(t.audit_log).where(t.audit_log.c.action == "flag.set")).one()
    assert (flag.enabled, flag.updated_by, flag.updated_at) == (True, "rita", clock.now())
    assert audit.actor == "rita" and audit.target == "disable_advanced_analytics"
    assert json.loads(audit.detail_json) == {"enabled": True, "was": False}
    step = next(s for s in view["steps"] if s["id"] == "basic-monitoring")
    assert "flag disable_advanced_analytics on (was off)" in step["output"]


def test_a_notify_step_queues_the_template_for_the_incident(
    sqlite_store: Store, clock: FakeClock, sandbox: Sandbox, tmp_path: Path
) -> None:
    runbooks = tmp_path / "runbooks"
    user_runbook(
        runbooks,
        "tell",
        """
title: Tell the technical lead
steps:
  - {id: tell, kind: notify, template: status_update, to: "role:technical_lead"}
  - {id: edited, kind: notify, template: status_update, to: "contact:olga",
     subject: "Update on {{ site }}", body: "The database is being restored."}
""",
    )
    settings = sandbox.settings(sqlite_store, extra=people_extra(), runbooks=runbooks)
    incident_id = declare(sqlite_store, settings, clock)
    view = run(sqlite_store, settings, clock, "tell", incident_id=incident_id)
    assert [s["status"] for s in view["steps"]] == ["ok", "ok"]
    with sqlite_store.connect() as conn:
        rows = conn.execute(
            select(t.outbox.c.contact, t.outbox.c.kind, t.outbox.c.subject).where(
                t.outbox.c.kind == "status_update"
            )
        ).all()
    assert ("tina", "status_update") in [(r.contact, r.kind) for r in rows]
    assert ("olga", "Update on sandbox") in [(r.contact, r.subject) for r in rows]
    # without an incident there is nobody to tell: skipped, not failed
    alone = run(sqlite_store, settings, clock, "tell")
    assert [s["status"] for s in alone["steps"]] == ["skipped", "skipped"]


def test_inputs_are_required_and_must_be_safe_for_the_shell(
    sqlite_store: Store, clock: FakeClock, sandbox: Sandbox
) -> None:
    settings = sandbox.settings(sqlite_store)
    with pytest.raises(RunError) as exc:
        run(
            sqlite_store,
            settings,
            clock,
            "security-incident",
            inputs={"suspicious_ip": "1.2.3.4; rm -rf /"},
        )
    assert exc.value.field == "suspicious_ip"
    with pytest.raises(RunError) as exc:
        run(sqlite_store, settings, clock, "security-incident", inputs={"nope": "1"})
    assert "unknown input nope" in str(exc.value)
    with pytest.raises(RunError) as exc:
        run(sqlite_store, settings, clock, "no-such-runbook")
    assert (exc.value.http_status, exc.value.field) == (404, "name")
    # without the address, the block step is skipped and says why
    view = run(sqlite_store, settings, clock, "security-incident")
    block = next(s for s in view["steps"] if s["id"] == "block-address")
    assert block["status"] == "skipped" and "suspicious_ip is not set" in block["output"]
    assert not [c for c in sandbox.calls() if "-s 203" in c or "-j DROP" in c and "-s " in c]
