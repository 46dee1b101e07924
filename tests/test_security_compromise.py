"""A likely compromise (issue 17): a brute force then a success in sshd's log → an S1
incident with the security runbook attached, waiting for a responder, its suspicious_ip the
attacker's address; a second poll or another finding does not attach it twice."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from nachtwacht.clock import FakeClock
from nachtwacht.runbooks import service as runbooks
from nachtwacht.runbooks.record import Who
from nachtwacht.runbooks.runner import Policy, Runner
from nachtwacht.security import compromise
from nachtwacht.security.models import Source
from nachtwacht.security.watch import Watch
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.incident_fixtures import site
from tests.test_security_detectors import T0, failed, nginx, syslog
from tests.test_security_watch import append

PROBES = ("/.env", "/wp-login.php", "/.git/config")


def incident_events(store: Store, incident_id: int) -> list[tuple[str, str, str]]:
    e = t.incident_events.c
    with store.connect() as conn:
        rows = conn.execute(
            select(e.kind, e.actor, e.message).where(e.incident_id == incident_id).order_by(e.id)
        ).all()
    return [tuple(r) for r in rows]


async def test_brute_force_then_success_opens_an_s1_with_the_security_runbook(
    sqlite_store: Store, tmp_path: Path
) -> None:
    auth = tmp_path / "auth.log"
    auth.touch()
    clock = FakeClock(T0)
    settings = site(sqlite_store)
    watch = Watch(sqlite_store, settings, clock, [Source(name="ssh", kind="sshd", path=str(auth))])
    watch.poll()
    brute = "203.0.113.66"
    append(
        auth,
        *(failed(T0 + i * 10, addr=brute, user="root") for i in range(6)),
        syslog(T0 + 70, f"Accepted password for root from {brute} port 40000 ssh2"),
    )
    clock.set(T0 + 75)
    polled = watch.poll()
    rules = [(f.rule, f.key) for f in polled.findings]
    assert ("brute_force_success", brute) in rules
    pairs = zip(polled.findings, polled.outcomes, strict=True)
    [outcome] = [o for f, o in pairs if f.rule == "brute_force_success"]
    incident_id = outcome.incident_id
    assert incident_id is not None
    with sqlite_store.connect() as conn:
        severity = conn.execute(
            select(t.incidents.c.severity).where(t.incidents.c.id == incident_id)
        ).scalar_one()
        [run] = runbooks.list_runs(conn, incident_id=incident_id)
        view = runbooks.run_view(conn, run["id"])
    assert severity == 1
    assert polled.runbooks == [run["id"]]
    assert (view["runbook"], view["status"], view["next_step"], view["started_by"]) == (
        "security-incident",
        "waiting",
        1,
        "security",
    )
    assert view["inputs"] == {"suspicious_ip": brute}
    assert [(s["id"], s["status"]) for s in view["steps"]] == [("preserve-evidence", "waiting")]
    # the address is what the runbook's block step would block
    shown = runbooks.detail(settings, "security-incident", view["inputs"])
    [block] = [s for s in shown["steps"] if s["id"] == "block-address"]
    assert f"security block {brute} " in block["does"]
    assert any(
        kind == "runbook" and f"suspicious_ip={brute}" in message
        for kind, _, message in incident_events(sqlite_store, incident_id)
    )

    # another success from the same address later, another poll: still one run
    append(auth, syslog(T0 + 80, f"Accepted password for admin from {brute} port 40001 ssh2"))
    watch.poll()
    with sqlite_store.begin() as conn:
        assert compromise.attach(conn, settings, incident_id, brute, T0 + 90) is None
        assert len(runbooks.list_runs(conn, incident_id=incident_id)) == 1
    watch.close()

    # a responder takes it from there, step by step, as any run on the incident page
    runner = Runner(sqlite_store, settings, clock)
    await runner.resume(
        run["id"], who=Who("olga", "responder"), action="skip", policy=Policy(step_by_step=True)
    )
    with sqlite_store.connect() as conn:
        view = runbooks.run_view(conn, run["id"])
    assert (view["status"], view["next_step"]) == ("waiting", 2)
    assert view["steps"][0]["status"] == "skipped"


def test_a_compromise_for_an_account_carries_the_address_of_its_login(
    sqlite_store: Store, tmp_path: Path
) -> None:
    auth = tmp_path / "auth.log"
    auth.touch()
    clock = FakeClock(T0)
    settings = site(sqlite_store)
    watch = Watch(sqlite_store, settings, clock, [Source(name="ssh", kind="sshd", path=str(auth))])
    watch.poll()
    # failures for one account from many addresses, then a success from yet another
    append(
        auth,
        *(failed(T0 + i, addr=f"198.51.100.{i}", user="admin") for i in range(5)),
        syslog(T0 + 9, "Accepted password for admin from 192.0.2.77 port 2 ssh2"),
    )
    polled = watch.poll()
    [found] = [f for f in polled.findings if f.rule == "brute_force_success"]
    assert (found.key, found.addr) == ("user:admin", "192.0.2.77")
    with sqlite_store.connect() as conn:
        [run] = runbooks.list_runs(conn)
        impact = conn.execute(select(t.incidents.c.impact)).scalar_one()
    assert impact == (
        "a login of admin from 192.0.2.77 after 5 or more failed logins of that account within 9 s"
    )
    assert run["inputs"] == {"suspicious_ip": "192.0.2.77"}
    watch.close()


def test_a_compromise_joining_a_scanners_incident_names_it(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """A scanner's S3 opened the security incident; the S1 page must not name the scanner."""
    access, auth = tmp_path / "access.log", tmp_path / "auth.log"
    access.touch()
    auth.touch()
    clock = FakeClock(T0)
    settings = site(sqlite_store)
    sources = [
        Source(name="web", kind="nginx", path=str(access)),
        Source(name="ssh", kind="sshd", path=str(auth)),
    ]
    watch = Watch(sqlite_store, settings, clock, sources)
    watch.poll()
    scanner, brute = "198.51.100.77", "203.0.113.66"
    append(access, *(nginx(T0 + i, scanner, p, 404) for i, p in enumerate(PROBES)))
    clock.set(T0 + 5)
    [opened] = watch.poll().outcomes
    incident_id = opened.incident_id
    inc = t.incidents.c
    with sqlite_store.connect() as conn:
        before = conn.execute(select(inc.severity, inc.title).where(inc.id == incident_id)).one()
    assert before.severity == 3 and scanner in before.title

    append(
        auth,
        *(failed(T0 + 10 + i * 10, addr=brute, user="root") for i in range(6)),
        syslog(T0 + 80, f"Accepted password for root from {brute} port 40000 ssh2"),
    )
    clock.set(T0 + 85)
    polled = watch.poll()
    watch.close()
    assert {o.incident_id for o in polled.outcomes} == {incident_id}  # one security incident
    with sqlite_store.connect() as conn:
        after = conn.execute(
            select(inc.severity, inc.title, inc.impact).where(inc.id == incident_id)
        ).one()
    assert after.severity == 1
    assert after.title == f"security: likely compromise: login after failures: {brute}"
    assert after.impact == (
        f"a login from {brute} after 5 or more failed logins from that address within 60 s"
    )
    assert any(
        kind == "severity" and "named after it" in message
        for kind, _, message in incident_events(sqlite_store, incident_id)
    )


def test_one_poll_with_a_scanner_and_a_compromise_pages_the_s1_first(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """The scanner's lines come first in the log; the first page still says S1 and why."""
    access = tmp_path / "access.log"
    access.touch()
    clock = FakeClock(T0)
    settings = site(sqlite_store)
    watch = Watch(
        sqlite_store, settings, clock, [Source(name="web", kind="nginx", path=str(access))]
    )
    watch.poll()
    scanner, brute = "198.51.100.77", "203.0.113.66"
    login = "/api/method/login"
    append(
        access,
        *(nginx(T0 + i, scanner, p, 404) for i, p in enumerate(PROBES)),
        *(nginx(T0 + 10 + i, brute, login, 401, "POST") for i in range(6)),
        nginx(T0 + 20, brute, login, 200, "POST"),
    )
    clock.set(T0 + 25)
    polled = watch.poll()
    watch.close()
    # the outcomes stay in the findings' order (the watch pairs them)
    assert [f.rule for f in polled.findings][0] == "probe_paths"
    [incident_id] = {o.incident_id for o in polled.outcomes}
    with sqlite_store.connect() as conn:
        pages = (
            conn.execute(
                select(t.outbox.c.subject).where(
                    t.outbox.c.incident_id == incident_id, t.outbox.c.kind == "emergency_alert"
                )
            )
            .scalars()
            .all()
        )
    assert pages and all("S1 Critical" in s and "likely compromise" in s for s in pages)
    first = incident_events(sqlite_store, incident_id)[0]
    assert first[0] == "detected" and first[2].startswith("S1 incident opened: security: likely")
