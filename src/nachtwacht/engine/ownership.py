"""Who checks which probe: rendezvous hashing over the live members, judged on one clock.

Pure functions and one small observer, so the division and the liveness rule are tested with
a fake clock and no store (docs/decisions/0024-several-processes-one-store.md).

Rendezvous (highest random weight) hashing: each probe goes to the member with the highest
score(member, probe). Every member computes the same division from the same member set, with
no coordination; when a member joins or leaves only the probes it gains or loses move (about
1/n of them), the rest stay where they are.

Liveness is judged by each reader on its own clock: a member is alive while its heartbeat
counter (`beat`) keeps changing, and dead once the reader has seen no change for `dead_after`
seconds. Two hosts' clocks are never compared, so skew between them cannot kill a member or
keep a dead one alive.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass

_MASK = (1 << 64) - 1

# the member roles that run probes (`serve --role web` only answers HTTP)
CHECKING_ROLES = frozenset({"all", "worker"})


def _mix(x: int) -> int:
    """splitmix64's finaliser: a cheap, well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _seed(member: str) -> int:
    return int.from_bytes(hashlib.blake2b(member.encode(), digest_size=8).digest(), "big")


def owner_of(probe_id: int, members: Collection[str]) -> str | None:
    """The member that checks `probe_id` (None without members)."""
    best: tuple[int, str] | None = None
    for member in members:
        score = (_mix(_seed(member) ^ _mix(probe_id)), member)
        if best is None or score > best:
            best = score
    return best[1] if best is not None else None


def owned_by(me: str, members: Collection[str], probe_ids: Iterable[int]) -> set[int]:
    """The probes of `probe_ids` that `me` checks when `members` are the live checking members.

    Empty when `me` is not among them (not yet settled, fenced off, or a web-only member).
    """
    if me not in members:
        return set()
    seeds = sorted(((_seed(m), m) for m in members), key=lambda s: s[1])
    mine = set()
    for pid in probe_ids:
        h = _mix(pid)
        best = max(seeds, key=lambda s: (_mix(s[0] ^ h), s[1]))
        if best[1] == me:
            mine.add(pid)
    return mine


@dataclass
class Sighting:
    beat: int
    changed_at: float  # the reader's clock when it last saw `beat` change (or first saw it)


@dataclass(frozen=True)
class MemberRow:
    """What the reader needs of a `members` row."""

    id: str
    host: str
    pid: int
    role: str
    beat: int
    dead_at: float | None = None


class Observer:
    """One reader's view of the other members' heartbeats, on the reader's own clock.

    A member first seen counts as alive from that moment: a reader just started gives a member
    killed before it `dead_after` seconds, rather than judging it by another host's clock.
    """

    def __init__(self, dead_after: float, starting_grace: float = 120.0) -> None:
        self.dead_after = dead_after
        self.starting_grace = starting_grace
        self.seen: dict[str, Sighting] = {}

    def observe(self, rows: Iterable[MemberRow], now: float) -> None:
        present = set()
        for row in rows:
            present.add(row.id)
            seen = self.seen.get(row.id)
            if seen is None or seen.beat != row.beat:
                self.seen[row.id] = Sighting(row.beat, now)
        for gone in set(self.seen) - present:
            del self.seen[gone]

    def alive(self, member: str, now: float) -> bool:
        seen = self.seen.get(member)
        return seen is not None and now - seen.changed_at <= self.dead_after

    def silent(self, rows: Iterable[MemberRow], now: float, me: str) -> list[MemberRow]:
        """Members not yet declared dead whose heartbeat stopped (to be claimed as dead).

        A member still starting (beat 0: joined, building its scheduler) gets `starting_grace`.
        """
        out = []
        for r in rows:
            if r.id == me or r.dead_at is not None:
                continue
            seen = self.seen.get(r.id)
            bound = self.dead_after if r.beat > 0 else self.starting_grace
            if seen is None or now - seen.changed_at > bound:
                out.append(r)
        return out

    def live_checkers(self, rows: Iterable[MemberRow], now: float, me: str) -> set[str]:
        """The other checking members alive in this reader's view (never `me`).

        Only members that have started beating: one still starting checks nothing yet.
        """
        return {
            r.id
            for r in rows
            if r.id != me
            and r.role in CHECKING_ROLES
            and r.dead_at is None
            and r.beat > 0
            and self.alive(r.id, now)
        }

    def others(self, rows: Iterable[MemberRow], now: float, me: str) -> bool:
        """Is any other member alive or still starting (so a joiner should settle first)?"""
        listed = [r for r in rows if r.id != me and r.dead_at is None]
        silent = {r.id for r in self.silent(listed, now, me)}
        return any(r.id not in silent for r in listed)
