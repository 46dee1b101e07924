"""Sliding-window detectors over security events, with bounded memory.

`Detector.feed(event)` returns the findings that event starts; `Detector.sweep()` (on the
injected clock) returns the findings that cleared and forgets idle keys.

Decisions:

- Per rule, per key (an address, or "user:<name>"), the timestamps of the last `threshold`
  events in an `array('d')` (8 bytes a timestamp, no float objects): the condition holds at an
  event when the array is full and its oldest entry is within `window` of it (both ends
  included). Older entries are dropped as newer ones arrive, so a key costs at most
  `threshold` timestamps however hot it is.
- Time is the events': a backlog read late finds what happened when it happened. Lines a
  little out of order (two workers writing one log) are tolerated: an event older than the
  newest counted one is counted as if it came at that newest time, never reorders the array.
- Dedup: a rule fires once per key while its condition holds; the key is "firing" until an
  event finds the condition no longer holding, or a sweep finds the key idle (its newest
  event older than the window, so it cannot hold). Only then can it fire again. A rule with
  `resolves` gets a cleared finding then (the alert resolves); brute-force success does not.
- Memory: `sweep` forgets keys idle past their window, and a rule holds at most `max_keys`
  keys (beyond that, the first inserted is forgotten: under a flood of spoofed addresses the
  detector stays bounded rather than complete).
- Brute-force success: a successful login from an address (or for an account) whose failed
  logins fill the failed-login rule's window at that moment is a likely compromise (S1).
- New network: a successful login of an account in `admins` from a network (/24 IPv4, /48
  IPv6; an address that is not an IP is its own network) that account has not logged in from
  within the rule's window (90 days). The networks are the watch's to load and store
  (`networks`, `seen`); an account with no network on record at all learns its first one
  without a finding, or every install would begin with one alert per admin.
- Tallies: the detector counts what it classifies into `tally` (`security.tallies`), so the
  report's daily counts and the findings agree on what a login or a refusal is.
"""

from __future__ import annotations

import ipaddress
from array import array
from dataclasses import dataclass, field

from nachtwacht.clock import Clock
from nachtwacht.security.models import (
    BRUTE_FORCE_SUCCESS,
    CSRF,
    FAILED_LOGIN,
    FAILED_LOGIN_ACCOUNT,
    NEW_NETWORK,
    PROBE_PATHS,
    RATE_LIMIT,
    SCANNER_404,
    UNAUTHORIZED,
    AccessEvent,
    CsrfEvent,
    Event,
    Finding,
    LoginEvent,
    Rule,
    Thresholds,
)
from nachtwacht.security.tallies import (
    ADMIN_NETWORK,
    LOGIN,
    NOT_FOUND,
    PROBE_PATH,
    RATE_LIMITED,
    REFUSED,
    Tally,
    fit,
)
from nachtwacht.security.tallies import CSRF as T_CSRF
from nachtwacht.security.tallies import FAILED_LOGIN as T_FAILED


def network_of(addr: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) an address is in; an IPv4-mapped IPv6 address is IPv4."""
    try:
        ip = ipaddress.ip_address(addr.strip("[]"))
    except ValueError:
        return addr  # a name, or garbage: its own network
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    bits = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


@dataclass
class _Windows:
    """One rule's keys: timestamps (newest last) and which keys are firing."""

    rule: Rule
    max_keys: int
    times: dict[str, array[float]] = field(default_factory=dict)
    firing: set[str] = field(default_factory=set)

    def add(self, key: str, ts: float) -> Finding | None:
        times = self.times.get(key)
        if times is None:
            if len(self.times) >= self.max_keys:
                oldest = next(iter(self.times))
                del self.times[oldest]
                self.firing.discard(oldest)
            times = self.times[key] = array("d")
        elif ts < times[-1]:
            ts = times[-1]
        times.append(ts)
        threshold = self.rule.threshold
        if len(times) > threshold:
            del times[0]
        holds = len(times) >= threshold and ts - times[0] <= self.rule.window
        if not holds:
            self.firing.discard(key)
            return None
        if key in self.firing:
            return None
        self.firing.add(key)
        return Finding(
            self.rule.name,
            key,
            True,
            ts,
            times[0],
            len(times),
            self.rule.severity,
            self.rule.title,
        )

    def holds(self, key: str, ts: float) -> bool:
        times = self.times.get(key)
        return (
            times is not None
            and len(times) >= self.rule.threshold
            and ts - times[0] <= self.rule.window
        )

    def count(self, key: str) -> int:
        times = self.times.get(key)
        return 0 if times is None else len(times)

    def sweep(self, now: float) -> list[Finding]:
        cleared: list[Finding] = []
        horizon = now - self.rule.window
        idle = [key for key, times in self.times.items() if times[-1] < horizon]
        for key in idle:
            times = self.times.pop(key)
            if key in self.firing:
                self.firing.discard(key)
                if self.rule.resolves:
                    cleared.append(
                        Finding(
                            self.rule.name,
                            key,
                            False,
                            now,
                            times[0],
                            len(times),
                            self.rule.severity,
                            self.rule.title,
                        )
                    )
        return cleared


class Detector:
    """Every rule of `Thresholds` over one stream of events (not thread-safe)."""

    def __init__(self, clock: Clock, thresholds: Thresholds | None = None) -> None:
        self.clock = clock
        self.thresholds = thresholds or Thresholds()
        rules = self.thresholds.rules
        self._w = {
            name: _Windows(rule, self.thresholds.max_keys)
            for name, rule in rules.items()
            if name != NEW_NETWORK
        }
        self._probe_paths = tuple(p.lower() for p in self.thresholds.probe_paths)
        self._login_paths = self.thresholds.login_paths
        self.events = 0
        self.tally = Tally()
        self._count = self.tally.add
        # the site's own login records are read too (Frappe's Activity Log): a login seen in
        # the access log as well would count twice, and without the account's name
        self.logins_elsewhere = False
        # {account: {network: last login}} within the window, and every account on record
        self.networks: dict[str, dict[str, float]] = {}
        self.seen: set[str] = set()

    def keys(self) -> int:
        """How many (rule, key) windows are held: the detector's memory, in keys."""
        return sum(len(w.times) for w in self._w.values())

    def feed(self, event: Event) -> list[Finding]:
        self.events += 1
        if isinstance(event, AccessEvent):
            return self._access(event)
        if isinstance(event, LoginEvent):
            return self._login(event)
        if isinstance(event, CsrfEvent):
            self._count(T_CSRF, fit(event.addr), event.ts)
            return self._add(CSRF, event.addr, event.ts)
        raise TypeError(f"not a security event: {event!r}")

    def sweep(self) -> list[Finding]:
        """Forget keys that cannot hold any more (idle past their window); cleared findings."""
        now = self.clock.now()
        cleared: list[Finding] = []
        for windows in self._w.values():
            cleared.extend(windows.sweep(now))
        rule = self.thresholds.rules.get(NEW_NETWORK)
        if rule is not None:
            for known in self.networks.values():
                for network in [n for n, last in known.items() if now - last > rule.window]:
                    del known[network]
        return cleared

    def _add(self, rule: str, key: str, ts: float) -> list[Finding]:
        windows = self._w.get(rule)
        if windows is None:  # a rule switched off in the settings
            return []
        found = windows.add(key, ts)
        return [] if found is None else [found]

    def _access(self, e: AccessEvent) -> list[Finding]:
        status = e.status
        path = e.path
        if status in (401, 200) and e.method == "POST" and path.startswith(self._login_paths):
            if self.logins_elsewhere:
                return []
            return self._login(LoginEvent(e.ts, e.addr, e.user, status == 200))
        found: list[Finding] = []
        if status == 401 or status == 403:
            self._count(REFUSED, fit(e.addr), e.ts)
            found += self._add(UNAUTHORIZED, e.addr, e.ts)
        elif status == 404:
            self._count(NOT_FOUND, fit(path.split("?", 1)[0]), e.ts)
            self._count(NOT_FOUND, fit(e.addr), e.ts)  # the report's events per address
            found += self._add(SCANNER_404, e.addr, e.ts)
        elif status == 429:
            self._count(RATE_LIMITED, fit(e.addr), e.ts)
            found += self._add(RATE_LIMIT, e.addr, e.ts)
        if path.lower().startswith(self._probe_paths):
            self._count(PROBE_PATH, fit(path.split("?", 1)[0]), e.ts)
            if status not in (401, 403, 404, 429):  # else the address has it counted above
                self._count(PROBE_PATH, fit(e.addr), e.ts)
            found += self._add(PROBE_PATHS, e.addr, e.ts)
        return found

    def _login(self, e: LoginEvent) -> list[Finding]:
        account = f"user:{e.user}" if e.user else ""
        kind = LOGIN if e.ok else T_FAILED
        if e.addr:
            self._count(kind, fit(e.addr), e.ts)
        if account:
            self._count(kind, fit(account), e.ts)
        if not e.ok:
            # a row without an address (a Frappe behind a proxy that hides it) counts per
            # account only: one "" key would lump every such failure together
            found = self._add(FAILED_LOGIN, e.addr, e.ts) if e.addr else []
            if account:
                found += self._add(FAILED_LOGIN_ACCOUNT, account, e.ts)
            return found
        found = self._success(e, account)
        if e.user and e.addr and e.user in self.thresholds.admins:
            found += self._network(e)
        return found

    def _network(self, e: LoginEvent) -> list[Finding]:
        rule = self.thresholds.rules.get(NEW_NETWORK)
        if rule is None:
            return []
        network = network_of(e.addr)
        self._count(ADMIN_NETWORK, fit(f"{e.user}@{network}"), e.ts)
        known = self.networks.setdefault(e.user, {})
        last = known.get(network)
        known[network] = e.ts if last is None else max(last, e.ts)
        if e.user not in self.seen:
            self.seen.add(e.user)  # the first network on record is learned, not reported
            return []
        if last is not None and e.ts - last <= rule.window:
            return []
        return [
            Finding(
                NEW_NETWORK,
                f"user:{e.user}@{network}",
                True,
                e.ts,
                e.ts,
                1,
                rule.severity,
                rule.title,
                e.addr,
            )
        ]

    def _success(self, e: LoginEvent, account: str) -> list[Finding]:
        bf = self._w.get(BRUTE_FORCE_SUCCESS)
        if bf is None:
            return []
        for rule, key in ((FAILED_LOGIN, e.addr), (FAILED_LOGIN_ACCOUNT, account)):
            failed = self._w.get(rule)
            if not key or failed is None or not failed.holds(key, e.ts):
                continue
            if key in bf.firing:
                return []
            bf.firing.add(key)
            # kept until the failures that led to it are idle, so a sweep forgets it
            bf.times[key] = array("d", [e.ts])
            return [
                Finding(
                    BRUTE_FORCE_SUCCESS,
                    key,
                    True,
                    e.ts,
                    failed.times[key][0],
                    failed.count(key),
                    bf.rule.severity,
                    bf.rule.title,
                    e.addr,
                )
            ]
        return []
