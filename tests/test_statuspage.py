"""The status page's service: drafts at the 4-hour step, approval, fan-out, reminders, the view."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import insert, update

from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import ConfigError, parse_config
from nachtwacht.statuspage import notices, subscribers, view
from nachtwacht.statuspage.service import StatusPageError
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.incident_fixtures import deliver, fire_db, site, tick
from tests.statuspage_fixtures import INTERNAL, make_commander, outbox_of, status_site

HOUR = 3600.0


def _four_hours_in(store: Store, clock: FakeClock) -> tuple[int, float]:
    """An S1 database incident, escalated through the matrix up to its 4-hour step."""
    settings = status_site(store)
    t0 = clock.now()
    incident_id = fire_db(store, settings, t0)
    for minutes in (0, 15, 30, 60, 120, 240):
        tick(store, settings, t0 + minutes * 60)
        deliver(store, t0 + minutes * 60)
    return incident_id, t0 + 4 * HOUR


def test_the_4_hour_step_drafts_a_customer_notice_in_public_words(
    sqlite_store: Store, clock: FakeClock
) -> None:
    settings = status_site(sqlite_store)
    incident_id, now = _four_hours_in(sqlite_store, clock)
    with sqlite_store.begin() as conn:
        assert notices.list_notices(conn, incident_id) == []  # before the statuspage tick
        notices.tick(conn, settings, now)
        notices.tick(conn, settings, now + 60)  # once, not once per tick
    with sqlite_store.connect() as conn:
        drafts = notices.list_notices(conn, incident_id)
        page = view.build(conn, settings, now)
    assert len(drafts) == 1
    draft = drafts[0]
    assert (draft["state"], draft["kind"], draft["public_status"]) == (
        "draft",
        "notice",
        "investigating",
    )
    assert draft["title"] == "Service disruption: Member database"
    assert draft["components"] == ["Member database"]
    # the protocol's Customer/User Notification, filled from public facts
    for line in (
        "We are currently experiencing technical issues with Member database.",
        "Our team is actively working to resolve the issue.",
        "Expected Resolution: not yet known",
        "We will provide updates every hour until resolved.",
        "For urgent matters, please contact: support@vereniging.example",
    ):
        assert line in draft["body"]
    for secret in INTERNAL:
        assert secret not in draft["body"] + draft["title"]
    # a draft is not on the page
    assert page["incidents"] == [] and page["past"] == []


def test_only_the_commander_or_an_admin_approves(sqlite_store: Store, clock: FakeClock) -> None:
    settings = status_site(sqlite_store)
    now = clock.now()
    incident_id = fire_db(sqlite_store, settings, now)
    make_commander(sqlite_store, incident_id, "tina", now)
    with sqlite_store.begin() as conn:
        draft = notices.draft(conn, settings, incident_id, "bert", now)
    with pytest.raises(StatusPageError) as refused, sqlite_store.begin() as conn:
        notices.approve(conn, settings, draft["id"], "bert", "responder", now)
    assert refused.value.kind == "forbidden"
    assert "tina" in refused.value.message
    with sqlite_store.begin() as conn:
        published, _ = notices.approve(conn, settings, draft["id"], "tina", "responder", now + 5)
        with pytest.raises(StatusPageError) as again:
            notices.approve(conn, settings, draft["id"], "admin", "admin", now + 6)
    assert again.value.kind == "conflict"
    assert (published["state"], published["approved_by"]) == ("published", "tina")
    with sqlite_store.connect() as conn:
        page = view.build(conn, settings, now + 10)
    assert [i["title"] for i in page["incidents"]] == ["Service disruption: Member database"]


def test_an_admin_approves_an_incident_without_commander(
    sqlite_store: Store, clock: FakeClock
) -> None:
    settings = status_site(sqlite_store)
    now = clock.now()
    incident_id = fire_db(sqlite_store, settings, now)
    with sqlite_store.begin() as conn:
        draft = notices.draft(conn, settings, incident_id, "bert", now)
        with pytest.raises(StatusPageError):
            notices.approve(conn, settings, draft["id"], "bert", "responder", now)
        row, _ = notices.approve(conn, settings, draft["id"], "root", "admin", now)
    assert row["state"] == "published"


def test_the_headline_does_not_say_all_is_well_beside_a_published_incident(
    sqlite_store: Store, clock: FakeClock
) -> None:
    """Every public component operational, yet a notice is out: the headline says so."""
    settings = status_site(sqlite_store)
    now = clock.now()
    incident_id = fire_db(sqlite_store, settings, now)
    with sqlite_store.connect() as conn:
        before = view.build(conn, settings, now)
    assert (before["overall"], before["overall_label"]) == (
        "operational",
        "All systems operational",
    )  # no probe result yet: every component is operational, no notice is out
    with sqlite_store.begin() as conn:
        draft = notices.draft(conn, settings, incident_id, "root", now)
        assert view.build(conn, settings, now)["overall"] == "operational"  # a draft is not out
        notices.approve(conn, settings, draft["id"], "root", "admin", now)
        page = view.build(conn, settings, now)
    assert len(page["incidents"]) == 1
    assert page["overall"] == "incident"
    assert "operational" not in page["overall_label"].lower()


def test_a_published_notice_is_queued_for_confirmed_subscribers_only(
    store: Store, clock: FakeClock
) -> None:
    settings = status_site(store)
    now = clock.now()
    incident_id = fire_db(store, settings, now)
    with store.begin() as conn:
        subscribers.subscribe_email(conn, settings, "Confirmed@Example.org", now)
        subscribers.subscribe_email(conn, settings, "pending@example.org", now)
        token = (
            conn.execute(
                t.status_subscribers.select().where(
                    t.status_subscribers.c.address == "confirmed@example.org"
                )
            )
            .mappings()
            .one()["token"]
        )
        assert subscribers.confirm(conn, token, now)
        draft = notices.draft(conn, settings, incident_id, "olga", now)
        _, queued = notices.approve(conn, settings, draft["id"], "root", "admin", now)
    assert queued == 1
    mails = outbox_of(store, "status_notice")
    assert [m["address"] for m in mails] == ["confirmed@example.org"]
    assert mails[0]["incident_id"] is None  # subscribers are not in the incident's timeline
    assert f"https://status.vereniging.example/unsubscribe/{token}" in mails[0]["body"]
    for secret in INTERNAL:
        assert secret not in mails[0]["body"]


def test_the_commander_is_reminded_when_a_public_update_is_due(
    sqlite_store: Store, clock: FakeClock
) -> None:
    settings = status_site(sqlite_store)
    t0 = clock.now()
    incident_id = fire_db(sqlite_store, settings, t0)
    make_commander(sqlite_store, incident_id, "tina", t0)
    with sqlite_store.begin() as conn:
        draft = notices.draft(conn, settings, incident_id, "tina", t0)
        notices.approve(conn, settings, draft["id"], "tina", "responder", t0)

    def run(at: float) -> int:
        with sqlite_store.begin() as conn:
            return notices.tick(conn, settings, at)

    assert run(t0 + HOUR - 1) == 0  # S1: hourly in public
    sent = run(t0 + HOUR)
    assert run(t0 + HOUR + 30) == 0  # reminded once per due time
    reminders = outbox_of(sqlite_store, "status_reminder")
    # the commander by e-mail, and the team's chat channel as with every reminder
    assert sorted((r["channel"], r["contact"]) for r in reminders) == [
        ("chat", None),
        ("mail", "tina"),
    ]
    assert sent == 2
    assert "a public status update is due" in reminders[0]["subject"]
    # a new public update moves the next reminder an hour on from it
    with sqlite_store.begin() as conn:
        update = notices.draft(conn, settings, incident_id, "tina", t0 + 1.5 * HOUR)
        assert update["kind"] == "update"
        # the page heads the incident with the newest title: by default the one it has
        assert update["title"] == "Service disruption: Member database"
        notices.approve(conn, settings, update["id"], "tina", "responder", t0 + 1.5 * HOUR)
    assert run(t0 + 2 * HOUR) == 0
    assert run(t0 + 2.5 * HOUR) == 2


def test_a_resolution_inside_drafts_the_public_resolution(
    sqlite_store: Store, clock: FakeClock
) -> None:
    from nachtwacht.incidents import escalation

    settings = status_site(sqlite_store)
    t0 = clock.now()
    incident_id = fire_db(sqlite_store, settings, t0)
    with sqlite_store.begin() as conn:
        draft = notices.draft(conn, settings, incident_id, "olga", t0)
        notices.approve(conn, settings, draft["id"], "root", "admin", t0)
        escalation.resolve(conn, settings, incident_id, "olga", t0 + 600, "fixed")
        notices.tick(conn, settings, t0 + 660)
        resolved = notices.list_notices(conn, incident_id, "draft")
    assert [(r["kind"], r["public_status"]) for r in resolved] == [("resolved", "resolved")]
    with sqlite_store.connect() as conn:
        page = view.build(conn, settings, t0 + 700)
    assert page["incidents"][0]["status"] == "investigating"  # not resolved until approved
    with sqlite_store.begin() as conn:
        notices.approve(conn, settings, resolved[0]["id"], "root", "admin", t0 + 720)
        page = view.build(conn, settings, t0 + 730)
        assert notices.tick(conn, settings, t0 + 10 * HOUR) == 0  # nothing more is due
    assert page["incidents"] == []
    assert page["past"][0]["status"] == "resolved"
    # named as customers know it, not "Resolved: Member database"
    assert page["past"][0]["title"] == "Resolved: Service disruption: Member database"


def test_bad_notice_input_is_refused_and_changes_nothing(
    sqlite_store: Store, clock: FakeClock
) -> None:
    settings = status_site(sqlite_store)
    now = clock.now()
    incident_id = fire_db(sqlite_store, settings, now)
    with sqlite_store.begin() as conn:
        draft = notices.draft(conn, settings, incident_id, "olga", now)
    for kwargs, field in (
        ({"components": ["database"]}, "components"),  # internal, not public
        ({"public_status": "mitigating"}, "public_status"),
        ({"body": "x" * 4001}, "body"),
        ({"title": "  "}, "title"),
    ):
        with pytest.raises(StatusPageError) as refused, sqlite_store.begin() as conn:
            notices.edit(conn, settings, draft["id"], now, **kwargs)
        assert refused.value.field == field
    with sqlite_store.connect() as conn:
        assert notices.get(conn, draft["id"])["updated_at"] == now
    with pytest.raises(StatusPageError) as twice, sqlite_store.begin() as conn:
        notices.draft(conn, settings, incident_id, "olga", now)
    assert twice.value.kind == "conflict"


def test_asking_to_subscribe_reveals_nothing_and_mails_at_most_hourly(
    sqlite_store: Store, clock: FakeClock
) -> None:
    settings = status_site(sqlite_store)
    now = clock.now()
    with sqlite_store.begin() as conn:
        outcomes = [
            subscribers.subscribe_email(conn, settings, "a@example.org", now + i) for i in range(3)
        ]
        later = subscribers.subscribe_email(conn, settings, "a@example.org", now + HOUR + 1)
        with pytest.raises(StatusPageError):
            subscribers.subscribe_email(conn, settings, "not an address", now)
    assert outcomes[1:] == ["confirm mail sent recently"] * 2
    assert later == "confirm mail queued"
    confirms = outbox_of(sqlite_store, "status_confirm")
    assert len(confirms) == 2
    # the same link both times: an older mail still confirms
    links = {line for m in confirms for line in m["body"].splitlines() if "/confirm/" in line}
    assert len(links) == 1


def test_pending_subscriptions_are_capped(sqlite_store: Store, clock: FakeClock) -> None:
    settings = status_site(sqlite_store, "  pending_max: 2\n")
    now = clock.now()
    with sqlite_store.begin() as conn:
        for n in range(2):
            subscribers.subscribe_email(conn, settings, f"s{n}@example.org", now)
        with pytest.raises(StatusPageError) as full:
            subscribers.subscribe_email(conn, settings, "s3@example.org", now)
    assert full.value.kind == "conflict"


def test_the_limiter_counts_per_address_per_hour() -> None:
    limiter = subscribers.SubscribeLimiter(per_hour=2, max_clients=2)
    assert [limiter.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    assert limiter.allow("a", 3601.0)
    assert limiter.allow("b", 0.0) and limiter.allow("c", 0.0)
    assert len(limiter._seen) == 2  # bounded: the oldest address went


def test_the_view_shows_states_uptime_and_maintenance_in_public_words(
    sqlite_store: Store, clock: FakeClock
) -> None:
    from nachtwacht.alerts.windows import add_window
    from nachtwacht.engine.runtime import _sync_probes

    settings = status_site(sqlite_store)
    now = clock.now()
    ids = _sync_probes(sqlite_store, settings, now)
    hour = int(now // HOUR)
    with sqlite_store.begin() as conn:
        for name, state, message in (
            ("db", "critical", "cannot connect: Connection refused"),
            ("db-replica", "ok", "ok"),
            ("app", "ok", "ok"),
        ):
            conn.execute(
                update(t.probe_state)
                .where(t.probe_state.c.probe_id == ids[name])
                .values(state=state, last_message=message)
            )
        rollups = []
        for back in range(1, 24 * 100):
            bad = back <= 24  # the last day: half the database's checks failed
            for name in ("db", "app"):
                ok = 30 if (bad and name == "db") else 60
                rollups.append(
                    {
                        "probe_id": ids[name],
                        "bucket": hour - back,
                        "n": 60,
                        "n_ok": ok,
                        "n_warning": 0,
                        "n_critical": 60 - ok,
                        "n_unknown": 0,
                    }
                )
        conn.execute(insert(t.rollup_hour), rollups)
        add_window(
            conn, settings, name="Internal: swap the db disks (ticket OPS-7)",
            starts_at=now + 3600, ends_at=now + 7200, components=["web"], probes=[],
            created_by="olga", comment="ask Tina first", now=now,
        )  # fmt: skip
        page = view.build(conn, settings, now)
    db, web = page["components"]
    assert (db["name"], db["state"], db["label"]) == (
        "Member database",
        "partial_outage",
        "Partial outage",
    )
    assert (web["name"], web["state"]) == ("Website", "operational")
    assert page["overall"] == "partial_outage"
    assert len(db["bars"]) == 90 and db["bars"][-1]["class"] in ("poor", "fair")
    assert web["bars"][-2]["value"] == 1.0 and web["bars"][0]["value"] == 1.0
    assert 0.97 < db["uptime"] < 1.0
    assert page["maintenance"] == [
        {"title": "Scheduled maintenance", "state": "scheduled", "starts_at": now + 3600,
         "ends_at": now + 7200, "components": ["Website"]}
    ]  # fmt: skip
    text = json.dumps(page)
    for secret in (*INTERNAL, "OPS-7", "swap the db disks", "db-replica", '"db"'):
        assert secret not in text


def test_the_config_refuses_unknown_components_and_channels(sqlite_store: Store) -> None:
    from tests.incident_fixtures import SITE

    base = f"store:\n  url: {sqlite_store.url}\n" + SITE
    with pytest.raises(ConfigError) as bad:
        parse_config(
            base + "status_page:\n  components: {Shop: shop}\n  email_channel: chat\n", "s.yaml"
        )
    text = str(bad.value)
    assert "no probe or component is named 'shop'" in text
    assert "status_page.email_channel: no email channel is named 'chat'" in text
    with pytest.raises(ConfigError):
        parse_config(base + "status_page:\n  path: /api/status\n", "s.yaml")


def test_the_docs_config_is_valid_and_its_commands_run(tmp_path: Path) -> None:
    """docs/status-page.md: its config parses, and its commands run as shown (the incident and
    notice numbers aside, which are whatever the store gives)."""
    from typer.testing import CliRunner

    from nachtwacht.cli.main import app as cli

    doc = (Path(__file__).resolve().parent.parent / "docs" / "status-page.md").read_text()
    [block] = re.findall(r"```yaml\n(.*?)```", doc, re.S)
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(f"store:\n  url: sqlite:///{tmp_path / 'nw.db'}\n" + block)
    settings = parse_config(config.read_text(), str(config))
    assert settings.status_page.components == {"Member database": ["database"], "Website": ["web"]}
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, [*args, "-c", str(config)])
        assert result.exit_code == 0, result.output
        return result.output

    run("incident", "declare", "--title", "db1 OOM", "--severity", "1", "--component", "database")
    commands = [
        line.removeprefix("nachtwacht ").split()
        for line in re.findall(r"^nachtwacht statuspage .*$", doc, re.M)
    ]
    numbers = {"12": "1", "3": "1", "4": "2", "7": "1"}
    approved = False
    for words in commands:
        words = [numbers.get(w, w) for w in words]
        text = " ".join(words)
        quoted = re.findall(r'"([^"]*)"', text)
        args = re.sub(r'"[^"]*"', "\x00", text).split()
        args = [quoted.pop(0) if a == "\x00" else a for a in args]
        run(*args)
        approved = approved or words[2] == "approve"
    assert approved


def test_nachtwachts_own_draft_is_made_once_even_when_two_engines_race(
    store: Store, clock: FakeClock
) -> None:
    settings = status_site(store)
    now = clock.now()
    incident_id = fire_db(store, settings, now)
    with store.begin() as conn:
        assert notices._auto(conn, settings, incident_id, "notice", now) == 1
        # the other engine read "no notice yet" before the first committed: its insert of the
        # same key fails inside its savepoint, and its transaction goes on
        notices.discard(conn, notices.list_notices(conn, incident_id)[0]["id"], "olga", now)
        assert notices._auto(conn, settings, incident_id, "notice", now) == 0
        assert len(notices.list_notices(conn, incident_id)) == 1
        notices.draft(conn, settings, incident_id, "olga", now)  # the transaction still works


async def test_the_engine_module_drafts_at_the_4_hour_step(
    sqlite_store: Store, clock: FakeClock
) -> None:
    from nachtwacht.engine.runtime import Runtime

    incident_id, now = _four_hours_in(sqlite_store, clock)
    runtime = Runtime.build(status_site(sqlite_store), sqlite_store, clock)
    module = runtime.engine.modules["statuspage"]
    assert module.interval == 60.0
    await module.tick(now)
    with sqlite_store.connect() as conn:
        assert [n["kind"] for n in notices.list_notices(conn, incident_id)] == ["notice"]
    await runtime.stop()
    plain = Runtime.build(site(sqlite_store), sqlite_store, clock)
    assert "statuspage" not in plain.engine.modules  # off by default
    await plain.stop()


def test_strangers_requests_lapse_and_do_not_close_subscribing_for_good(
    sqlite_store: Store, clock: FakeClock
) -> None:
    """Fault: `pending_max` junk requests (addresses nobody confirms) arrive at once."""
    settings = status_site(sqlite_store, "  pending_max: 2\n")
    now = clock.now()
    with sqlite_store.begin() as conn:
        subscribers.subscribe_email(conn, settings, "known@example.org", now)
        row = conn.execute(
            t.status_subscribers.select().where(
                t.status_subscribers.c.address == "known@example.org"
            )
        ).one()
        assert subscribers.confirm(conn, row.token, now)
        for n in range(2):
            subscribers.subscribe_email(conn, settings, f"junk{n}@example.org", now)
        # full: the known address and a new one get the same refusal (no enumeration)
        for asker in ("known@example.org", "new@example.org"):
            with pytest.raises(StatusPageError) as full:
                subscribers.subscribe_email(conn, settings, asker, now)
            assert full.value.kind == "conflict"
        junk = conn.execute(
            t.status_subscribers.select().where(
                t.status_subscribers.c.address == "junk0@example.org"
            )
        ).one()
    later = now + subscribers.PENDING_FOR + 1
    with sqlite_store.begin() as conn:
        # the lapsed request's link confirms nothing, and the queue is open again
        assert not subscribers.confirm(conn, junk.token, later)
        assert (
            subscribers.subscribe_email(conn, settings, "new@example.org", later)
            == "confirm mail queued"
        )
        # asking again for a lapsed address starts over with a new link
        assert (
            subscribers.subscribe_email(conn, settings, "junk1@example.org", later)
            == "confirm mail queued"
        )
        notices.tick(conn, settings, later)
        left = {r.address: r.state for r in conn.execute(t.status_subscribers.select()).all()}
    assert left == {
        "known@example.org": "confirmed",
        "new@example.org": "pending",
        "junk1@example.org": "pending",
    }


def test_the_limiter_counts_an_ipv6_clients_whole_prefix() -> None:
    """Fault: one IPv6 client asks from a new address of its /64 each time."""
    limiter = subscribers.SubscribeLimiter(per_hour=2)
    answers = [limiter.allow(f"2001:db8:1:2::{n:x}", 0.0) for n in range(1, 4)]
    assert answers == [True, True, False]
    assert limiter.allow("2001:db8:1:3::1", 0.0)  # another line
    assert [limiter.allow("::ffff:192.0.2.7", 0.0) for _ in range(2)] == [True, True]
    assert not limiter.allow("192.0.2.7", 0.0)  # the same IPv4 client, written either way


def test_unsubscribing_withdraws_the_notices_still_queued(
    sqlite_store: Store, clock: FakeClock
) -> None:
    """Fault: the sender is slow (a fan-out waits behind pages) and the subscriber leaves."""
    settings = status_site(sqlite_store)
    now = clock.now()
    incident_id = fire_db(sqlite_store, settings, now)
    with sqlite_store.begin() as conn:
        tokens = []
        for address in ("leaves@example.org", "stays@example.org"):
            subscribers.subscribe_email(conn, settings, address, now)
            token = (
                conn.execute(
                    t.status_subscribers.select().where(t.status_subscribers.c.address == address)
                )
                .one()
                .token
            )
            assert subscribers.confirm(conn, token, now)
            tokens.append(token)
        draft = notices.draft(conn, settings, incident_id, "olga", now)
        notices.approve(conn, settings, draft["id"], "root", "admin", now)
    with sqlite_store.begin() as conn:
        assert subscribers.unsubscribe(conn, tokens[0], now + 60)
    states = {m["address"]: m["status"] for m in outbox_of(sqlite_store, "status_notice")}
    assert states == {"leaves@example.org": "cancelled", "stays@example.org": "pending"}


def test_a_reminder_nobody_can_receive_says_so_on_the_timeline(
    sqlite_store: Store, clock: FakeClock
) -> None:
    """Fault: no channel reaches anyone (the config lost its channels). The timeline must not
    say the commander is being reminded."""
    from nachtwacht.incidents import service as incidents

    settings = status_site(sqlite_store)
    t0 = clock.now()
    incident_id = fire_db(sqlite_store, settings, t0)
    make_commander(sqlite_store, incident_id, "tina", t0)
    with sqlite_store.begin() as conn:
        draft = notices.draft(conn, settings, incident_id, "tina", t0)
        notices.approve(conn, settings, draft["id"], "tina", "responder", t0)
    mute = settings.model_copy(
        update={"notify": settings.notify.model_copy(update={"channels": {}})}
    )
    with sqlite_store.begin() as conn:
        assert notices.tick(conn, mute, t0 + HOUR) == 0
        said = [
            e["message"]
            for e in incidents.timeline(conn, incident_id)
            if e["kind"] == "status_page" and "public update due" in e["message"]
        ]
    assert len(said) == 1 and said[0].endswith("nobody was reminded")
    with sqlite_store.begin() as conn:
        assert notices.tick(conn, settings, t0 + 2 * HOUR) == 2
        said = [e["message"] for e in incidents.timeline(conn, incident_id)]
    assert "reminder queued for Tina" in said[-1] and "via chat, mail" in said[-1]
