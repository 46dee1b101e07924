"""Nachtwacht's own nftables table: blocked addresses and the HTTP lockdown (decision 26).

Everything lives in `table inet nachtwacht`, so Nachtwacht never edits (or flushes) a rule it
did not write, and `nft delete table inet nachtwacht` undoes all of it. Its input chain drops
sources in the `blocked4`/`blocked6` sets, and while `lockdown_ports` holds ports, drops new
connections to them from anyone not in `lockdown_allow4`/`lockdown_allow6` (loopback always
passes). The sets carry the `interval` flag, so an element may be a network, and the `timeout`
flag: each element is added with the time its block has left, so a block still ends when
Nachtwacht is not running to remove it. The store's row stays the record; the kernel's timeout
is the second safety net.

`nft` runs through subprocess with an argument list, never a shell. `prefix` goes in front of
it: `["ip", "netns", "exec", "NS"]` runs it inside a network namespace (the tests do).
"""

from __future__ import annotations

import ipaddress
import json
import math
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

TABLE = "nachtwacht"
FAMILY = "inet"
CHAIN = "input"
# before the usual filter chains (priority 0), so a block holds whatever else the host runs
PRIORITY = -10
TIMEOUT_RUN = 20.0  # seconds one nft call may take

Kind = Literal["block", "allow", "port"]
SETS: dict[tuple[Kind, int], str] = {
    ("block", 4): "blocked4",
    ("block", 6): "blocked6",
    ("allow", 4): "lockdown_allow4",
    ("allow", 6): "lockdown_allow6",
    ("port", 0): "lockdown_ports",
}


class FirewallError(Exception):
    """nft could not be run, or refused what it was asked."""


class Firewall(Protocol):
    """What the blocks service needs of a firewall (tests pass a recording fake)."""

    def ensure(self) -> None: ...

    def add(self, kind: Kind, element: str, timeout: float | None) -> None: ...

    def remove(self, kind: Kind, element: str) -> None: ...

    def elements(self, kind: Kind) -> set[str]: ...


def canonical(value: str) -> str:
    """`203.0.113.9` for one address, `203.0.113.0/24` for a network; ValueError if neither."""
    network = ipaddress.ip_network(value.strip(), strict=False)
    if network.num_addresses == 1:
        return str(network.network_address)
    return str(network)


def version_of(element: str) -> int:
    return ipaddress.ip_network(element, strict=False).version


def set_name(kind: Kind, element: str) -> str:
    return SETS[(kind, 0 if kind == "port" else version_of(element))]


def ruleset() -> str:
    """The table, its sets and its chain, as one `nft -f` script (atomic, and idempotent: the
    chain's rules are flushed and written anew; the sets' elements are kept)."""
    sets = []
    for (kind, version), name in SETS.items():
        if kind == "port":
            sets.append(f"add set {FAMILY} {TABLE} {name} {{ type inet_service; flags timeout; }}")
        else:
            sets.append(
                f"add set {FAMILY} {TABLE} {name} "
                f"{{ type ipv{version}_addr; flags interval,timeout; }}"
            )
    t = f"{FAMILY} {TABLE}"
    return "\n".join(
        [
            f"add table {t}",
            *sets,
            f"add chain {t} {CHAIN} "
            f"{{ type filter hook input priority {PRIORITY}; policy accept; }}",
            f"flush chain {t} {CHAIN}",
            f'add rule {t} {CHAIN} iif "lo" accept',
            f"add rule {t} {CHAIN} ip saddr @blocked4 drop",
            f"add rule {t} {CHAIN} ip6 saddr @blocked6 drop",
            # the lockdown: allowed sources pass, the rest of the ports' traffic is dropped
            f"add rule {t} {CHAIN} tcp dport @lockdown_ports ip saddr @lockdown_allow4 accept",
            f"add rule {t} {CHAIN} tcp dport @lockdown_ports ip6 saddr @lockdown_allow6 accept",
            f"add rule {t} {CHAIN} tcp dport @lockdown_ports drop",
            "",
        ]
    )


def _element(kind: Kind, element: str, timeout: float | None) -> str:
    text = element if kind == "port" else canonical(element)
    if timeout is not None:
        # whole seconds, at least one: nft refuses 0, and a block must not end early
        text += f" timeout {max(1, math.ceil(timeout))}s"
    return f"{{ {text} }}"


def _missing(exc: FirewallError, command: str) -> bool:
    """nft's answer for a table or set that does not exist (it echoes the command), not a
    missing nft binary (`ip netns exec` says "No such file or directory" for that too)."""
    return "No such file or directory" in str(exc) and command in str(exc)


def _value(val: Any) -> str:
    """One element of `nft -j list set` as text: an address, a prefix, a range or a port."""
    if isinstance(val, dict):
        if "elem" in val:
            return _value(val["elem"]["val"])
        if "prefix" in val:
            p = val["prefix"]
            return canonical(f"{p['addr']}/{p['len']}")
        if "range" in val:
            low, high = val["range"]
            nets = list(
                ipaddress.summarize_address_range(
                    ipaddress.ip_address(low), ipaddress.ip_address(high)
                )
            )
            return canonical(str(nets[0])) if len(nets) == 1 else f"{low}-{high}"
    if isinstance(val, int):
        return str(val)
    return canonical(str(val))


@dataclass
class Nftables:
    """The real firewall: `nft` (or `prefix + [nft]`) run per call."""

    nft: str = "nft"
    prefix: Sequence[str] = field(default_factory=tuple)

    def _run(self, args: Sequence[str], stdin: str | None = None) -> str:
        argv = [*self.prefix, self.nft, *args]
        try:
            done = subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_RUN,
                check=False,
            )
        except FileNotFoundError:
            raise FirewallError(
                f"cannot run {argv[0]}: not found (install nftables, or set security.respond.nft)"
            ) from None
        except subprocess.TimeoutExpired:
            raise FirewallError(f"nft did not answer within {TIMEOUT_RUN:.0f} s") from None
        except OSError as exc:
            raise FirewallError(f"cannot run {argv[0]}: {exc.strerror}") from None
        if done.returncode != 0:
            message = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
            raise FirewallError(f"nft {' '.join(args[:2])}: {message[:500]}")
        return done.stdout

    def ensure(self) -> None:
        self._run(["-f", "-"], stdin=ruleset())

    def add(self, kind: Kind, element: str, timeout: float | None) -> None:
        """Put `element` in its set with this timeout, whether or not it is there already.

        Adding an element that is there keeps its old timeout, so this is one atomic script:
        add (a no-op if present), delete, add with the timeout.
        """
        name = set_name(kind, element)
        target = f"element {FAMILY} {TABLE} {name}"
        bare = _element(kind, element, None)
        script = (
            f"add {target} {bare}\n"
            f"delete {target} {bare}\n"
            f"add {target} {_element(kind, element, timeout)}\n"
        )
        self._run(["-f", "-"], stdin=script)

    def remove(self, kind: Kind, element: str) -> None:
        """Remove `element`; one that is not there (expired, never added) is not an error."""
        name = set_name(kind, element)
        if element not in self._list(name):
            return
        try:
            self._run(["delete", "element", FAMILY, TABLE, name, _element(kind, element, None)])
        except FirewallError:
            # the kernel's timeout may have taken it between the listing and the delete
            if element in self._list(name):
                raise

    def elements(self, kind: Kind) -> set[str]:
        names = [n for (k, _v), n in SETS.items() if k == kind]
        found: set[str] = set()
        for name in names:
            found |= self._list(name)
        return found

    def _list(self, name: str) -> set[str]:
        try:
            out = self._run(["-j", "list", "set", FAMILY, TABLE, name])
        except FirewallError as exc:
            if _missing(exc, f"list set {FAMILY} {TABLE}"):
                return set()  # no table yet: nothing is blocked
            raise
        found: set[str] = set()
        for item in json.loads(out).get("nftables", []):
            for val in item.get("set", {}).get("elem", []):
                found.add(_value(val))
        return found

    def delete_table(self) -> None:
        """Everything Nachtwacht put in the firewall, gone (tests, and by hand)."""
        try:
            self._run(["delete", "table", FAMILY, TABLE])
        except FirewallError as exc:
            if not _missing(exc, f"delete table {FAMILY} {TABLE}"):
                raise
