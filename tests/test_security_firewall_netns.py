"""Real nftables in two network namespaces this test creates: a blocked address cannot connect,
and can again after an unblock, after its block expires (the fake clock, through the engine
module) and after the kernel's own timeout; the lockdown closes a port but to its allow-list;
a reboot's empty firewall is refilled by the reconcile.

`fw` holds the firewall and a TCP listener on 10.77.0.1; `cl` is the client at 10.77.0.2,
joined by a veth pair. Nothing touches the host's own network namespace. Skipped where `ip
netns` or `nft` cannot run (not root, no nftables: `make system-deps` installs it).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from nachtwacht.clock import FakeClock
from nachtwacht.engine.runtime import Runtime
from nachtwacht.security import applier as applier_mod
from nachtwacht.security import blocks, respond_engine
from nachtwacht.security.firewall import Nftables
from nachtwacht.store.db import Store
from tests.incident_fixtures import site
from tests.netns_fixtures import namespaces, sh

pytestmark = pytest.mark.serial  # creates namespaces and runs nft: one at a time

SERVER, CLIENT = "10.77.0.1", "10.77.0.2"
# a port inside a namespace of this test's own: nothing else can hold it
PORT = 8080
LISTENER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"""
CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
except OSError:
    sys.exit(1)
"""


@dataclass
class Net:
    fw: str
    cl: str

    def connects(self, timeout: float = 1.0) -> bool:
        """Whether the client gets a TCP connection to the listener (a dropped SYN: no)."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.cl, sys.executable, "-c", CONNECT, SERVER, str(PORT)]
            + [str(timeout)],
            capture_output=True,
            timeout=30,
        )
        return done.returncode == 0


@pytest.fixture
def net() -> Iterator[Net]:
    serve = ["-c", LISTENER, SERVER, str(PORT)]
    with namespaces("nwfw", SERVER, CLIENT, serve) as (fw, cl):
        yield Net(fw=fw, cl=cl)


def _config(net: Net) -> str:
    return f"security:\n  respond:\n    enabled: true\n    netns: {net.fw}\n    interval: 5s\n"


async def test_a_blocked_address_is_refused_until_unblocked_or_expired(
    net: Net, sqlite_store: Store, clock: FakeClock
) -> None:
    settings = site(sqlite_store, _config(net))
    respond = settings.security.respond
    rt = Runtime.build(settings, sqlite_store, clock)
    try:
        assert net.connects()

        async def tick() -> None:
            assert await rt.engine.tick_once(respond_engine.MODULE), rt.engine.modules[
                respond_engine.MODULE
            ].health.last_error

        await tick()  # the table is made (reconcile at start), nothing blocked
        with sqlite_store.begin() as conn:
            blocks.block(
                conn, respond, CLIENT, duration=600.0, reason="test", actor="t", now=clock.now()
            )
        await tick()
        assert not net.connects()

        with sqlite_store.begin() as conn:
            blocks.unblock(conn, CLIENT, "t", clock.now())
        await tick()
        assert net.connects()

        # expiry on the fake clock: blocked until its time is up, not a tick less
        with sqlite_store.begin() as conn:
            blocks.block(
                conn, respond, CLIENT, duration=600.0, reason="again", actor="t", now=clock.now()
            )
        await tick()
        clock.advance(595)
        await tick()
        assert not net.connects()

        # a reboot empties nftables: the reconcile puts the active block back
        sh("ip", "netns", "exec", net.fw, "nft", "delete", "table", "inet", "nachtwacht")
        assert net.connects()
        # (what the module does at its start and every reconcile_interval)
        fresh = applier_mod.Applier(sqlite_store, blocks.firewall_for(respond), clock)
        assert fresh.reconcile().reapplied
        assert not net.connects()

        clock.advance(5)  # 600 s: its time is up
        await tick()
        assert net.connects()
        assert [b["state"] for b in _all(sqlite_store, clock)] == ["removed", "removed"]
    finally:
        await rt.stop()


def _all(store: Store, clock: FakeClock) -> list[dict[str, object]]:
    with store.connect() as conn:
        return blocks.list_blocks(conn, clock.now(), include_all=True)


def test_the_kernel_timeout_ends_a_block_without_nachtwacht(net: Net) -> None:
    fw = Nftables(prefix=("ip", "netns", "exec", net.fw))
    fw.ensure()
    fw.add("block", CLIENT, 3)  # as a block with 3 s left that nobody removes
    assert not net.connects(timeout=1.0)
    deadline = time.monotonic() + 20  # a bound on the kernel's timer, not a measured duration
    while CLIENT in fw.elements("block") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert fw.elements("block") == set()
    assert net.connects()


def test_the_lockdown_closes_the_port_but_to_its_allow_list(
    net: Net, sqlite_store: Store, clock: FakeClock
) -> None:
    settings = site(sqlite_store, _config(net))
    respond = settings.security.respond
    applier = applier_mod.Applier(sqlite_store, blocks.firewall_for(respond), clock)
    with sqlite_store.begin() as conn:
        blocks.lockdown(
            conn, respond, ports=[PORT], allow=["10.77.9.0/24"], duration=None, reason=None,
            actor="t", now=clock.now(),
        )  # fmt: skip
    assert applier.run().errors == []
    assert not net.connects()
    with sqlite_store.begin() as conn:
        blocks.lockdown_off(conn, "t", clock.now())
        blocks.lockdown(
            conn, respond, ports=[PORT], allow=[f"{CLIENT}/32"], duration=None, reason=None,
            actor="t", now=clock.now(),
        )  # fmt: skip
    assert applier.run().errors == []
    assert net.connects()  # on the allow-list
    with sqlite_store.begin() as conn:
        blocks.lockdown_off(conn, "t", clock.now())
    assert applier.run().errors == []
    assert net.connects()


def test_adding_an_element_again_sets_its_new_timeout(net: Net) -> None:
    import json

    fw = Nftables(prefix=("ip", "netns", "exec", net.fw))
    fw.ensure()
    fw.add("block", "203.0.113.9", 30)
    fw.add("block", "203.0.113.9", 600)  # a block of it again: the kernel must keep it 600 s
    out = subprocess.run(
        ["ip", "netns", "exec", net.fw, "nft", "-j", "list", "set", "inet", "nachtwacht"]
        + ["blocked4"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    [elem] = json.loads(out)["nftables"][1]["set"]["elem"]
    assert elem["elem"]["timeout"] == 600
    fw.remove("block", "203.0.113.9")
    fw.remove("block", "203.0.113.9")  # gone already: no error
    assert fw.elements("block") == set()


def test_doctor_checks_the_firewall_when_responses_are_on(net: Net, sqlite_store: Store) -> None:
    from nachtwacht.watchdog.doctor import check_firewall

    settings = site(sqlite_store, _config(net))
    assert check_firewall(settings).message == "nft runs; 0 blocked in inet nachtwacht"
    broken = site(sqlite_store, _config(net) + "    nft: /nonexistent/nft\n")
    check = check_firewall(broken)
    assert check.level == "fail" and "nft" in check.message


def test_with_a_netns_the_namespace_addresses_are_its_own(net: Net, sqlite_store: Store) -> None:
    """The firewall is in the namespace: its addresses are the ones a block must not cut off,
    and the host's own (outside it) may be blocked there."""
    respond = site(sqlite_store, _config(net)).security.respond
    assert SERVER in blocks.own_addresses(net.fw)
    with pytest.raises(blocks.BlockError, match="an address of this host"):
        blocks.check_address(SERVER, respond)
    outside = sorted(a for a in blocks.own_addresses() if a not in ("127.0.0.1", "::1"))
    for addr in outside[:1]:  # the host's own address, none of the namespace's
        if ":" not in addr and not addr.startswith("169.254."):
            assert blocks.check_address(addr, respond) == addr
