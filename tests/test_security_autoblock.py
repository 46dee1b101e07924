"""security.respond.auto_block: a listed rule's firing finding blocks its address by itself, in
the transaction that records the finding; never an allow-listed address, one already blocked,
one whose alert a silence mutes, nor more than max_per_hour an hour. Off by default."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import insert

from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import ConfigError
from nachtwacht.security import applier as applier_mod
from nachtwacht.security.models import Source
from nachtwacht.security.watch import Watch
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.incident_fixtures import site
from tests.test_security_blocks import FakeFirewall, rows, timeline
from tests.test_security_detectors import T0, failed, syslog
from tests.test_security_watch import append

AUTO = """
security:
  respond:
    enabled: true
    allow: [198.51.100.0/24]
    auto_block: {rules: [failed_login, brute_force_success]%s}
"""


def _watch(store: Store, tmp_path: Path, extra: str) -> tuple[Watch, Path, FakeClock]:
    auth = tmp_path / "auth.log"
    auth.touch()
    clock = FakeClock(T0)
    settings = site(store, extra)
    watch = Watch(store, settings, clock, [Source(name="ssh", kind="sshd", path=str(auth))])
    watch.poll()
    return watch, auth, clock


def _attack(auth: Path, clock: FakeClock, addr: str, at: float, n: int = 5) -> None:
    # a new account name each time: only the per-address rules fire
    append(auth, *(failed(at + i, addr=addr, user=f"u{int(at)}-{i}") for i in range(n)))
    clock.set(at + n + 1)


def test_off_by_default_a_finding_blocks_nothing(sqlite_store: Store, tmp_path: Path) -> None:
    watch, auth, clock = _watch(sqlite_store, tmp_path, "security:\n  respond: {enabled: true}\n")
    _attack(auth, clock, "203.0.113.7", T0)
    polled = watch.poll()
    assert [f.rule for f in polled.findings] == ["failed_login"]
    assert polled.blocks == [] and rows(sqlite_store) == []


def test_a_listed_rule_blocks_its_address_once_and_the_applier_records_it(
    sqlite_store: Store, tmp_path: Path
) -> None:
    watch, auth, clock = _watch(sqlite_store, tmp_path, AUTO % "")
    _attack(auth, clock, "203.0.113.7", T0)
    polled = watch.poll()
    [outcome] = polled.outcomes
    [block] = rows(sqlite_store)
    assert polled.blocks == [block["id"]]
    assert (block["address"], block["state"], block["created_by"], block["rule"]) == (
        "203.0.113.7", "pending", "nachtwacht", "failed_login",
    )  # fmt: skip
    assert block["incident_id"] == outcome.incident_id is not None
    assert block["expires_at"] == clock.now() + 3600  # the shipped duration
    # the success after the burst (a likely compromise) finds it blocked already: no second
    append(auth, syslog(T0 + 20, "Accepted password for root from 203.0.113.7 port 1 ssh2"))
    clock.set(T0 + 21)
    later = watch.poll()
    assert "brute_force_success" in [f.rule for f in later.findings]
    assert later.blocks == [] and len(rows(sqlite_store)) == 1
    # the respond module's applier puts it in the firewall; the timeline hears of it then
    fw = FakeFirewall()
    applier_mod.Applier(sqlite_store, fw, clock).run()
    assert set(fw.sets["block"]) == {"203.0.113.7"}
    said = [m for k, m in timeline(sqlite_store, block["incident_id"]) if k == "security_block"]
    assert len(said) == 1 and said[0].startswith("blocked 203.0.113.7 until ")


def test_allow_listed_silenced_and_over_the_hourly_cap_are_not_blocked(
    sqlite_store: Store, tmp_path: Path
) -> None:
    watch, auth, clock = _watch(sqlite_store, tmp_path, AUTO % ", max_per_hour: 2")
    with sqlite_store.begin() as conn:  # the office's address: its alert is silenced
        conn.execute(
            insert(t.silences).values(
                matcher="fingerprint:security:failed_login:203.0.113.50",
                starts_at=T0 - 60, ends_at=T0 + 86400, created_by="olga", comment="office",
            )
        )  # fmt: skip
    _attack(auth, clock, "198.51.100.9", T0)  # on security.respond.allow
    _attack(auth, clock, "203.0.113.50", T0 + 10)
    assert watch.poll().blocks == []
    for i, addr in enumerate(("203.0.113.1", "203.0.113.2", "203.0.113.3")):
        _attack(auth, clock, addr, T0 + 100 + 10 * i)
    polled = watch.poll()
    assert len([f for f in polled.findings if f.rule == "failed_login"]) == 3
    assert [r["address"] for r in rows(sqlite_store)] == ["203.0.113.1", "203.0.113.2"]
    # an hour later the budget is back
    _attack(auth, clock, "203.0.113.4", T0 + 200 + 3600)
    assert len(watch.poll().blocks) == 1


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("[nope]", "unknown rule 'nope'"),
        ("[failed_login_account]", "keyed by an account"),
    ],
)
def test_a_rule_that_cannot_block_is_a_config_error(
    sqlite_store: Store, rules: str, message: str
) -> None:
    text = f"security:\n  respond:\n    enabled: true\n    auto_block: {{rules: {rules}}}\n"
    with pytest.raises(ConfigError, match=message):
        site(sqlite_store, text)


def test_the_auto_block_example_in_security_monitoring_md_is_valid(sqlite_store: Store) -> None:
    import re
    import textwrap

    doc = Path(__file__).resolve().parent.parent / "docs" / "security-monitoring.md"
    blocks = re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.S)
    [example] = [b for b in blocks if "auto_block" in b]
    auto = site(sqlite_store, textwrap.dedent(example)).security.respond.auto_block
    assert auto.rules == ["failed_login", "brute_force_success", "probe_paths"]
    assert (auto.duration, auto.max_per_hour) == (3600.0, 100)
