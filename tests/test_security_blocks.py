"""security.blocks: a block is a row first, applied to the firewall by a claim, recorded on the
timeline only once the firewall took it, removed when its time is up (not before), and re-done
after a crash between the firewall call and the commit. The firewall here is a recording fake;
tests/test_security_firewall_netns.py drives real nftables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import ConfigError
from nachtwacht.engine.runtime import Runtime
from nachtwacht.incidents import service as incidents
from nachtwacht.security import applier as applier_mod
from nachtwacht.security import blocks, respond_engine
from nachtwacht.security import cli as security_cli
from nachtwacht.security.firewall import FirewallError, Kind
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.incident_fixtures import site

RESPOND = "security:\n  respond:\n    enabled: true\n"
OWN = ("192.0.2.10", "127.0.0.1", "::1")  # "this host" in these tests


class FakeFirewall:
    """Sets of elements, like nftables: adding twice and removing what is gone are no-ops."""

    def __init__(self) -> None:
        self.sets: dict[Kind, dict[str, float | None]] = {"block": {}, "allow": {}, "port": {}}
        self.calls: list[tuple[str, ...]] = []
        self.refuse: str | None = None  # an element whose add fails
        self.crash_after_add = False  # the process dies after nft, before the commit

    def ensure(self) -> None:
        self.calls.append(("ensure",))

    def add(self, kind: Kind, element: str, timeout: float | None) -> None:
        self.calls.append(("add", kind, element, str(timeout)))
        if element == self.refuse:
            raise FirewallError("nft add element: Error: Could not process rule: File exists")
        self.sets[kind][element] = timeout
        if self.crash_after_add:
            raise KeyboardInterrupt("killed")

    def remove(self, kind: Kind, element: str) -> None:
        self.calls.append(("remove", kind, element))
        self.sets[kind].pop(element, None)

    def elements(self, kind: Kind) -> set[str]:
        return set(self.sets[kind])


def rows(store: Store) -> list[dict[str, Any]]:
    with store.connect() as conn:
        query = select(t.security_blocks).order_by(t.security_blocks.c.id)
        return [dict(r) for r in conn.execute(query).mappings()]


def timeline(store: Store, incident_id: int) -> list[tuple[str, str]]:
    with store.connect() as conn:
        return [(e["kind"], e["message"]) for e in incidents.timeline(conn, incident_id)]


def audits(store: Store) -> list[tuple[str, str, str | None]]:
    a = t.audit_log.c
    with store.connect() as conn:
        found = conn.execute(select(a.actor, a.action, a.target).order_by(a.id)).all()
    return [tuple(r) for r in found]  # type: ignore[misc]


def alerts_of(store: Store) -> list[tuple[str, str, int, str]]:
    a = t.alerts.c
    with store.connect() as conn:
        found = conn.execute(select(a.fingerprint, a.status, a.severity, a.title)).all()
    return [tuple(r) for r in found]  # type: ignore[misc]


def declare(store: Store, settings: Any, now: float) -> int:
    with store.begin() as conn:
        return incidents.open_incident(
            conn, settings, title="break-in", severity=1, now=now, origin="declared"
        )


def do_block(store: Store, settings: Any, now: float, address: str, **kw: Any) -> int:
    kw.setdefault("duration", 3600.0)
    kw.setdefault("reason", "brute force")
    kw.setdefault("actor", "alice")
    with store.begin() as conn:
        return blocks.block(conn, settings.security.respond, address, now=now, own=OWN, **kw)


def test_a_block_is_applied_then_removed_on_time_not_before(store: Store, clock: FakeClock) -> None:
    settings = site(store, RESPOND)
    fw = FakeFirewall()
    applier = applier_mod.Applier(store, fw, clock, owner="a")
    now = clock.now()
    incident_id = declare(store, settings, now)
    block_id = do_block(store, settings, now, "203.0.113.9", incident_id=incident_id)
    [row] = rows(store)
    assert (row["state"], row["expires_at"], row["created_by"]) == ("pending", now + 3600, "alice")
    assert fw.sets["block"] == {}  # nothing is in the firewall yet, and the timeline waits
    assert [k for k, _ in timeline(store, incident_id)] == ["declared"]
    assert ("alice", "security.block", "203.0.113.9") in audits(store)

    done = applier.run()
    assert done.applied == [block_id] and done.errors == []
    assert fw.sets["block"] == {"203.0.113.9": 3600.0}  # the kernel's timeout: the time left
    [row] = rows(store)
    assert (row["state"], row["applied_at"], row["claimed_until"]) == ("active", now, None)
    kind, message = timeline(store, incident_id)[-1]
    assert kind == "security_block"
    assert message.startswith("blocked 203.0.113.9 until ") and "brute force" in message

    clock.advance(3599)
    assert applier.run().removed == []  # not before its time
    assert "203.0.113.9" in fw.sets["block"]
    clock.advance(1)
    assert applier.run().removed == [block_id]
    assert fw.sets["block"] == {}
    [row] = rows(store)
    assert (row["state"], row["removed_at"], row["removed_by"]) == ("removed", now + 3600, None)
    assert timeline(store, incident_id)[-1] == (
        "security_unblock",
        "unblocked 203.0.113.9: its block expired",
    )
    assert ("nachtwacht", "security.unblocked", "203.0.113.9") in audits(store)
    assert applier.run().removed == []  # done once


def test_a_crash_between_nft_and_the_commit_is_redone_when_the_claim_runs_out(
    sqlite_store: Store, clock: FakeClock
) -> None:
    settings = site(sqlite_store, RESPOND)
    fw = FakeFirewall()
    incident_id = declare(sqlite_store, settings, clock.now())
    block_id = do_block(sqlite_store, settings, clock.now(), "203.0.113.9", incident_id=incident_id)
    fw.crash_after_add = True
    with pytest.raises(KeyboardInterrupt):
        applier_mod.Applier(sqlite_store, fw, clock, owner="dead").run()
    [row] = rows(sqlite_store)
    assert (row["state"], row["claimed_by"]) == ("pending", "dead")  # in nft, not recorded
    assert [k for k, _ in timeline(sqlite_store, incident_id)] == ["declared"]

    fw.crash_after_add = False
    other = applier_mod.Applier(sqlite_store, fw, clock, owner="b", lease=60)
    assert other.run().applied == []  # the dead one's claim still holds
    clock.advance(61)
    assert other.run().applied == [block_id]
    adds = [call for call in fw.calls if call[0] == "add"]
    assert len(adds) == 2 and adds[1][3] == str(3600.0 - 61)  # the same element, again
    assert fw.sets["block"] == {"203.0.113.9": 3600.0 - 61}
    [row] = rows(sqlite_store)
    assert (row["state"], row["claimed_by"]) == ("active", "b")
    assert [k for k, _ in timeline(sqlite_store, incident_id)].count("security_block") == 1


def test_unblock_by_hand_lifts_it_at_the_next_pass(sqlite_store: Store, clock: FakeClock) -> None:
    settings = site(sqlite_store, RESPOND)
    fw = FakeFirewall()
    applier = applier_mod.Applier(sqlite_store, fw, clock)
    incident_id = declare(sqlite_store, settings, clock.now())
    do_block(sqlite_store, settings, clock.now(), "203.0.113.0/24", incident_id=incident_id)
    applier.run()
    clock.advance(10)
    with sqlite_store.begin() as conn:
        with pytest.raises(blocks.BlockError, match="not blocked") as refused:
            blocks.unblock(conn, "198.51.100.1", "bob", clock.now())
        assert refused.value.kind == "not_found"
        ids = blocks.unblock(conn, "203.0.113.0/24", "bob", clock.now())
    assert fw.sets["block"] == {"203.0.113.0/24": 3600.0}  # until the applier's pass
    assert applier.run().removed == ids
    assert fw.sets["block"] == {}
    [row] = rows(sqlite_store)
    assert (row["state"], row["removed_by"]) == ("removed", "bob")
    assert timeline(sqlite_store, incident_id)[-1] == (
        "security_unblock",
        "unblocked 203.0.113.0/24 (lifted by bob)",
    )
    assert ("bob", "security.unblock", "203.0.113.0/24") in audits(sqlite_store)
    with sqlite_store.connect() as conn:
        assert blocks.list_blocks(conn, clock.now()) == []
        [past] = blocks.list_blocks(conn, clock.now(), include_all=True)
    assert past["state"] == "removed" and past["removed_by"] == "bob"


def test_a_pending_block_lifted_before_it_was_applied_never_reaches_the_timeline_as_a_block(
    sqlite_store: Store, clock: FakeClock
) -> None:
    settings = site(sqlite_store, RESPOND)
    fw = FakeFirewall()
    incident_id = declare(sqlite_store, settings, clock.now())
    do_block(sqlite_store, settings, clock.now(), "203.0.113.9", incident_id=incident_id)
    with sqlite_store.begin() as conn:
        blocks.unblock(conn, "203.0.113.9", "bob", clock.now())
    applier_mod.Applier(sqlite_store, fw, clock).run()
    assert fw.sets["block"] == {}
    assert [m for k, m in timeline(sqlite_store, incident_id) if k.startswith("security")] == [
        "block of 203.0.113.9 withdrawn before it was applied"
    ]


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("192.0.2.10", "an address of this host"),
        ("192.0.2.0/24", "an address of this host"),
        ("10.1.2.3", "overlaps 10.0.0.0/8 in security.respond.allow"),
        ("0.0.0.0/0", "means everyone"),
        ("0.0.0.0", "means everyone"),
        ("::/0", "means everyone"),
        ("198.51.0.0/15", "too broad"),
        ("not-an-ip", "is not an IP address"),
        ("1.2.3.4; reboot", "is not an IP address"),
    ],
)
def test_refused_addresses_change_nothing(
    sqlite_store: Store, clock: FakeClock, address: str, why: str
) -> None:
    settings = site(sqlite_store, RESPOND + "    allow: [10.0.0.0/8]\n")
    with pytest.raises(blocks.BlockError, match=why):
        do_block(sqlite_store, settings, clock.now(), address)
    assert rows(sqlite_store) == [] and audits(sqlite_store) == []


def test_force_blocks_this_host_but_never_everyone(sqlite_store: Store, clock: FakeClock) -> None:
    settings = site(sqlite_store, RESPOND)
    do_block(sqlite_store, settings, clock.now(), "192.0.2.10", force=True)
    with pytest.raises(blocks.BlockError, match="means everyone"):
        do_block(sqlite_store, settings, clock.now(), "0.0.0.0/0", force=True)
    assert [r["address"] for r in rows(sqlite_store)] == ["192.0.2.10"]


def test_durations_reasons_incidents_and_doubles_are_checked(
    sqlite_store: Store, clock: FakeClock
) -> None:
    settings = site(sqlite_store, RESPOND)
    now = clock.now()
    for kw, why in [
        ({"duration": 8 * 86400.0}, "longer than security.respond.max_duration"),
        ({"duration": 0.0}, "a block lasts a while"),
        ({"reason": "x" * 10_001}, "reason is longer than"),
        ({"incident_id": 99}, "no incident #99"),
    ]:
        with pytest.raises(blocks.BlockError, match=why):
            do_block(sqlite_store, settings, now, "203.0.113.9", **kw)
    do_block(sqlite_store, settings, now, "203.0.113.9", duration=None)  # the default: 1h
    assert rows(sqlite_store)[0]["expires_at"] == now + 3600
    with pytest.raises(blocks.BlockError, match="already blocked") as twice:
        do_block(sqlite_store, settings, now, "203.0.113.9")
    assert twice.value.kind == "conflict"
    with pytest.raises(blocks.BlockError, match="203.0.113.0/24 overlaps 203.0.113.9, which"):
        do_block(sqlite_store, settings, now, "203.0.113.0/24")
    do_block(sqlite_store, settings, now, "2001:db8::/64")  # another family overlaps nothing


def test_shipped_defaults_change_no_firewall(sqlite_store: Store, clock: FakeClock) -> None:
    settings = site(sqlite_store)
    assert settings.security.respond.enabled is False
    with pytest.raises(blocks.BlockError, match="security.respond.enabled is false"):
        do_block(sqlite_store, settings, clock.now(), "203.0.113.9")
    assert rows(sqlite_store) == []


def test_a_firewall_refusal_is_recorded_failed_on_the_timeline_and_in_health(
    sqlite_store: Store, clock: FakeClock
) -> None:
    settings = site(sqlite_store, RESPOND)
    fw = FakeFirewall()
    fw.refuse = "203.0.113.9"
    incident_id = declare(sqlite_store, settings, clock.now())
    block_id = do_block(sqlite_store, settings, clock.now(), "203.0.113.9", incident_id=incident_id)
    done = applier_mod.Applier(sqlite_store, fw, clock).run()
    assert done.failed == [block_id] and "File exists" in done.errors[0]
    [row] = rows(sqlite_store)
    assert row["state"] == "failed" and "File exists" in row["error"]
    kind, message = timeline(sqlite_store, incident_id)[-1]
    assert kind == "security_block_failed" and message.startswith("could not block 203.0.113.9")
    assert ("nachtwacht", "security.block_failed", "203.0.113.9") in audits(sqlite_store)


def test_reconcile_puts_back_what_a_reboot_emptied_and_drops_strays(
    sqlite_store: Store, clock: FakeClock
) -> None:
    settings = site(sqlite_store, RESPOND)
    fw = FakeFirewall()
    applier = applier_mod.Applier(sqlite_store, fw, clock)
    block_id = do_block(sqlite_store, settings, clock.now(), "203.0.113.9")
    applier.run()
    fw.sets["block"].clear()  # a reboot
    fw.sets["block"]["198.51.100.7"] = None  # no row holds it
    clock.advance(600)
    done = applier_mod.Applier(sqlite_store, fw, clock).reconcile()
    assert done.reapplied == [block_id] and done.errors == []
    assert fw.sets["block"] == {"203.0.113.9": 3000.0}


def test_lockdown_rows_sources_first_and_off(sqlite_store: Store, clock: FakeClock) -> None:
    settings = site(sqlite_store, RESPOND + "    allow: [192.0.2.0/24]\n")
    fw = FakeFirewall()
    applier = applier_mod.Applier(sqlite_store, fw, clock)
    incident_id = declare(sqlite_store, settings, clock.now())
    respond = settings.security.respond
    with sqlite_store.begin() as conn:
        for kw, why in [
            ({"ports": []}, "at least one port"),
            ({"ports": [0]}, "not a TCP port"),
            ({"ports": [80], "allow": ["0.0.0.0/0"]}, "that is no lockdown"),
            ({"ports": [80], "allow": ["nope"]}, "not an IP address"),
        ]:
            with pytest.raises(blocks.BlockError, match=why):
                blocks.lockdown(
                    conn, respond, **{"allow": [], **kw}, duration=None, reason=None,
                    actor="alice", now=clock.now(),
                )  # fmt: skip
        blocks.lockdown(
            conn, respond, ports=[80, 443], allow=["10.0.0.0/8"], duration=1800.0,
            reason="breach", actor="alice", now=clock.now(), incident_id=incident_id,
        )  # fmt: skip
        with pytest.raises(blocks.BlockError, match="already on"):
            blocks.lockdown(
                conn, respond, ports=[80], allow=[], duration=None, reason=None,
                actor="alice", now=clock.now(),
            )  # fmt: skip
    applier.run()
    adds = [call[1:3] for call in fw.calls if call[0] == "add"]
    assert adds == [
        ("allow", "10.0.0.0/8"),
        ("allow", "192.0.2.0/24"),
        ("port", "80"),
        ("port", "443"),
    ]
    with sqlite_store.connect() as conn:
        assert blocks.list_blocks(conn, clock.now()) == []  # a lockdown is not a block
        assert len(blocks.list_blocks(conn, clock.now(), lockdown_rows=True)) == 4
    messages = [m for k, m in timeline(sqlite_store, incident_id) if k == "security_block"]
    assert any(m.startswith("lockdown: closed TCP port 443 until") for m in messages)
    assert fw.sets["allow"]["10.0.0.0/8"] == 1800.0 + blocks.ALLOW_MARGIN  # outlives the ports
    with sqlite_store.begin() as conn:
        blocks.lockdown_off(conn, "bob", clock.now())
    applier.run()
    assert fw.sets == {"block": {}, "allow": {}, "port": {}}
    removes = [call[1] for call in fw.calls if call[0] == "remove"]
    assert removes == ["port", "port", "allow", "allow"]  # opened before the allow-list goes
    assert timeline(sqlite_store, incident_id)[-1][1] in {
        "lockdown: TCP port 80 open again (turned off by bob)",
        "lockdown: TCP port 443 open again (turned off by bob)",
        "lockdown: 10.0.0.0/8 no longer on its allow-list",
        "lockdown: 192.0.2.0/24 no longer on its allow-list",
    }
    actions = [a for _, a, _ in audits(sqlite_store)]
    assert "security.lockdown" in actions and "security.lockdown_off" in actions


def test_the_respond_module_is_installed_only_when_enabled(
    sqlite_store: Store, clock: FakeClock
) -> None:
    import asyncio

    async def modules(extra: str) -> set[str]:
        runtime = Runtime.build(site(sqlite_store, extra), sqlite_store, clock)
        try:
            return set(runtime.engine.modules)  # not ticked: that would run nft on this host
        finally:
            await runtime.stop()

    assert respond_engine.MODULE not in asyncio.run(modules(""))
    assert respond_engine.MODULE in asyncio.run(modules(RESPOND))


def test_config_refuses_a_bad_allow_list_and_durations(sqlite_store: Store) -> None:
    with pytest.raises(ConfigError, match="not an IP address or network"):
        site(sqlite_store, RESPOND + "    allow: [somewhere]\n")
    with pytest.raises(ConfigError, match="security.respond.default_duration: may not be longer"):
        site(sqlite_store, RESPOND + "    default_duration: 8d\n")


# ---------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> tuple[Path, FakeFirewall]:
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(
        f"site: cli\nstore:\n  url: sqlite:///{tmp_path / 'nw.db'}\n" + RESPOND, encoding="utf-8"
    )
    fw = FakeFirewall()
    monkeypatch.setattr(security_cli, "CLOCK", clock)
    monkeypatch.setattr(security_cli, "FIREWALL", fw)
    monkeypatch.setenv("USER", "alice")
    return config, fw


def test_cli_block_list_unblock(cli: tuple[Path, FakeFirewall], clock: FakeClock) -> None:
    config, fw = cli
    runner = CliRunner()
    cfg = ["--config", str(config)]
    done = runner.invoke(
        security_cli.security_app, ["block", "203.0.113.9", "--for", "2h", "--reason", "scan", *cfg]
    )
    assert done.exit_code == 0, done.output
    assert done.output.startswith("blocked 203.0.113.9 until ") and "(block #1)" in done.output
    assert fw.sets["block"] == {"203.0.113.9": 7200.0}
    listed = runner.invoke(security_cli.security_app, ["blocks", "--json", *cfg])
    [row] = json.loads(listed.output)
    assert (row["address"], row["state"], row["created_by"], row["reason"]) == (
        "203.0.113.9", "active", "alice", "scan",
    )  # fmt: skip
    table = runner.invoke(security_cli.security_app, ["blocks", *cfg]).output
    assert "203.0.113.9" in table and "active" in table
    bad = runner.invoke(security_cli.security_app, ["block", "203.0.113.10", "--for", "soon", *cfg])
    assert bad.exit_code == 2 and "--for:" in bad.output
    gone = runner.invoke(security_cli.security_app, ["unblock", "203.0.113.9", *cfg])
    assert gone.exit_code == 0 and gone.output == "unblocked 203.0.113.9 (block #1)\n"
    assert fw.sets["block"] == {}
    assert "no blocks in force" in runner.invoke(security_cli.security_app, ["blocks", *cfg]).output


def test_cli_block_that_nft_refuses_exits_1(cli: tuple[Path, FakeFirewall]) -> None:
    config, fw = cli
    fw.refuse = "203.0.113.9"
    done = CliRunner().invoke(
        security_cli.security_app, ["block", "203.0.113.9", "--config", str(config)]
    )
    assert done.exit_code == 1 and "File exists" in done.output


def test_cli_lockdown_on_and_off(cli: tuple[Path, FakeFirewall]) -> None:
    config, fw = cli
    runner = CliRunner()
    cfg = ["--config", str(config)]
    on = runner.invoke(
        security_cli.security_app,
        ["lockdown", "--port", "80", "--port", "443", "--allow", "10.0.0.0/8", "--for", "1h", *cfg],
    )
    assert on.exit_code == 0, on.output
    assert "lockdown: TCP ports 80, 443 closed until" in on.output
    assert "except for loopback, 10.0.0.0/8" in on.output
    assert fw.sets["port"].keys() == {"80", "443"} and fw.sets["allow"].keys() == {"10.0.0.0/8"}
    off = runner.invoke(security_cli.security_app, ["lockdown", "--off", *cfg])
    assert off.exit_code == 0 and off.output == "lockdown off: TCP ports 80, 443 open again\n"
    assert fw.sets == {"block": {}, "allow": {}, "port": {}}


def test_rows_stuck_expiring_are_taken_over(sqlite_store: Store, clock: FakeClock) -> None:
    settings = site(sqlite_store, RESPOND)
    fw = FakeFirewall()
    block_id = do_block(sqlite_store, settings, clock.now(), "203.0.113.9")
    applier_mod.Applier(sqlite_store, fw, clock).run()
    clock.advance(3600)
    with sqlite_store.begin() as conn:  # a remover that claimed it and died
        conn.execute(
            update(t.security_blocks).values(
                state="expiring", claimed_by="dead", claimed_until=clock.now() + 60
            )
        )
    applier = applier_mod.Applier(sqlite_store, fw, clock, owner="b")
    assert applier.run().removed == []
    clock.advance(61)
    assert applier.run().removed == [block_id]
    assert rows(sqlite_store)[0]["state"] == "removed" and fw.sets["block"] == {}


def test_the_respond_example_in_security_monitoring_md_is_valid(sqlite_store: Store) -> None:
    import re

    doc = Path(__file__).resolve().parent.parent / "docs" / "security-monitoring.md"
    [block] = [
        b
        for b in re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.S)
        if "respond:" in b and "auto_block" not in b
    ]
    respond = site(sqlite_store, block).security.respond
    assert respond.enabled and respond.default_duration == 3600 and respond.netns is None
    assert respond.allow == ["10.0.0.0/8", "192.0.2.0/24"]


def test_a_refused_block_keeps_the_module_unhealthy_until_unblocked(
    sqlite_store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    fw = FakeFirewall()
    fw.refuse = "203.0.113.9"
    monkeypatch.setattr(respond_engine, "firewall_for", lambda _respond: fw)
    settings = site(sqlite_store, RESPOND)

    async def scenario() -> None:
        rt = Runtime.build(settings, sqlite_store, clock)
        try:
            module = rt.engine.modules[respond_engine.MODULE]
            assert await rt.engine.tick_once(respond_engine.MODULE)
            do_block(sqlite_store, settings, clock.now(), "203.0.113.9")
            assert not await rt.engine.tick_once(respond_engine.MODULE)
            clock.advance(5)
            assert not await rt.engine.tick_once(respond_engine.MODULE)  # still, by level
            assert "block #1 of 203.0.113.9 failed" in (module.health.last_error or "")
            # and an alert, once however many ticks: the responder must hear the address is
            # not blocked, not only /healthz
            assert alerts_of(sqlite_store) == [
                ("security:block_failed:1", "firing", 2, "the firewall refused the block of "
                 "203.0.113.9"),
            ]  # fmt: skip
            with sqlite_store.begin() as conn:
                assert blocks.unblock(conn, "203.0.113.9", "bob", clock.now()) == [1]
            assert await rt.engine.tick_once(respond_engine.MODULE)
            assert rows(sqlite_store)[0]["state"] == "removed"
            assert [a[:2] for a in alerts_of(sqlite_store)] == [
                ("security:block_failed:1", "resolved")
            ]
        finally:
            await rt.stop()

    asyncio.run(scenario())


def test_cli_incident_option_empty_is_none_and_unknown_is_refused(
    cli: tuple[Path, FakeFirewall],
) -> None:
    config, fw = cli
    runner = CliRunner()
    cfg = ["--config", str(config)]
    from nachtwacht.cli.main import app as root  # it turns a refusal into one error line

    unknown = runner.invoke(root, ["security", "block", "203.0.113.9", "--incident", "5", *cfg])
    assert unknown.exit_code == 2
    assert unknown.output == "error: incident: there is no incident #5 (incident)\n"
    bad = runner.invoke(
        security_cli.security_app, ["block", "203.0.113.9", "--incident", "x", *cfg]
    )
    assert bad.exit_code == 2 and "not an incident number" in bad.output
    assert fw.calls == []
    # a runbook run without an incident fills in --incident ""
    done = runner.invoke(
        security_cli.security_app, ["block", "203.0.113.9", "--incident", "", *cfg]
    )
    assert done.exit_code == 0, done.output
    listed = runner.invoke(security_cli.security_app, ["lockdown", "--port", "80", *cfg])
    assert listed.exit_code == 0, listed.output
    table = runner.invoke(security_cli.security_app, ["blocks", *cfg]).output
    assert table.startswith("lockdown on: TCP ports 80 until ")


def test_a_new_block_waits_while_the_old_blocks_removal_of_its_address_fails(
    sqlite_store: Store, clock: FakeClock
) -> None:
    """Fault: nft refuses the removal of a lifted block, and the address is blocked again."""

    class StuckRemoval(FakeFirewall):
        def __init__(self) -> None:
            super().__init__()
            self.refuse_removal = True

        def remove(self, kind: Kind, element: str) -> None:
            if self.refuse_removal:
                self.calls.append(("remove-refused", kind, element))
                raise FirewallError("nft delete element: Error: Resource busy")
            super().remove(kind, element)

    settings = site(sqlite_store, RESPOND)
    fw = StuckRemoval()
    applier = applier_mod.Applier(sqlite_store, fw, clock)
    old = do_block(sqlite_store, settings, clock.now(), "203.0.113.7")
    applier.run()
    clock.advance(10)
    with sqlite_store.begin() as conn:
        blocks.unblock(conn, "203.0.113.7", "bob", clock.now())
    new = do_block(sqlite_store, settings, clock.now(), "203.0.113.7", duration=7200.0)
    first = applier.run()
    assert first.removed == [] and first.applied == [] and first.errors
    fw.refuse_removal = False
    clock.advance(10)
    second = applier.run()
    assert (second.removed, second.applied) == ([old], [new])
    assert fw.sets["block"] == {"203.0.113.7": 7190.0}  # the new block, with its time left
    assert [r["state"] for r in rows(sqlite_store)] == ["removed", "active"]
