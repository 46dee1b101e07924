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
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from nachtwacht.clock import Clock
from nachtwacht.security.models import (
    BRUTE_FORCE_SUCCESS,
    CSRF,
    FAILED_LOGIN,
    FAILED_LOGIN_ACCOUNT,
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
        self._w = {name: _Windows(rule, self.thresholds.max_keys) for name, rule in rules.items()}
        self._probe_paths = tuple(p.lower() for p in self.thresholds.probe_paths)
        self._login_paths = self.thresholds.login_paths
        self.events = 0

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
            return self._add(CSRF, event.addr, event.ts)
        raise TypeError(f"not a security event: {event!r}")

    def sweep(self) -> list[Finding]:
        """Forget keys that cannot hold any more (idle past their window); cleared findings."""
        now = self.clock.now()
        cleared: list[Finding] = []
        for windows in self._w.values():
            cleared.extend(windows.sweep(now))
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
            return self._login(LoginEvent(e.ts, e.addr, e.user, status == 200))
        found: list[Finding] = []
        if status == 401 or status == 403:
            found += self._add(UNAUTHORIZED, e.addr, e.ts)
        elif status == 404:
            found += self._add(SCANNER_404, e.addr, e.ts)
        elif status == 429:
            found += self._add(RATE_LIMIT, e.addr, e.ts)
        if path.lower().startswith(self._probe_paths):
            found += self._add(PROBE_PATHS, e.addr, e.ts)
        return found

    def _login(self, e: LoginEvent) -> list[Finding]:
        account = f"user:{e.user}" if e.user else ""
        if not e.ok:
            found = self._add(FAILED_LOGIN, e.addr, e.ts)
            if account:
                found += self._add(FAILED_LOGIN_ACCOUNT, account, e.ts)
            return found
        return self._success(e, account)

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
                )
            ]
        return []
