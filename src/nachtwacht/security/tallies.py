"""Daily tallies: what the logs showed per UTC day, for the security report.

The detector counts into a `Tally` as it classifies events (a dict update per counted event;
normal 2xx/3xx traffic counts nothing), and the watch writes the poll's counts with
`write(conn, ...)` in the transaction that stores the read positions, so a count is neither
lost nor doubled by a crash between reading a line and recording it.

Decisions:

- One upsert per (day, kind, key) per poll (`n = n + :n`, `last_ts` the later of the two),
  in one executemany: SQLite and PostgreSQL `ON CONFLICT DO UPDATE`, MariaDB `ON DUPLICATE
  KEY UPDATE`, as `errors.service` does for its hour counts.
- At most `MAX_KEYS` keys per (day, kind) in the table: a key not yet stored when its (day,
  kind) holds that many is counted under "(other)", so a spray of addresses or paths cannot
  grow the table without bound. The stored keys per (day, kind) are read once and then kept
  in memory (a thousand strings a kind a day). Two processes writing one store may overshoot
  the cap by what they add at the same moment; the cap is a bound, not an exact count.
- A poll's counts in memory are bounded too (`MAX_BATCH_KEYS` per (day, kind)): a huge
  backlog of distinct addresses folds into "(other)" before it reaches the store.
- Keys are cut to fit the column: paths lose their query string, a long key keeps a prefix
  and a hash of the whole, so two long keys stay distinct.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, case, insert, select, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.sql.expression import bindparam

from nachtwacht.store import tables as t

MAX_KEYS = 1000  # per (day, kind) in the store
MAX_BATCH_KEYS = 20_000  # per (day, kind) in one poll's memory
OTHER = "(other)"
KEY_LEN = 200  # the column's

FAILED_LOGIN = "failed_login"
LOGIN = "login"
REFUSED = "refused"
NOT_FOUND = "not_found"
RATE_LIMITED = "rate_limited"
CSRF = "csrf"
PROBE_PATH = "probe_path"
ADMIN_NETWORK = "admin_network"  # "<account>@<network>": an admin's known networks
KINDS = (FAILED_LOGIN, LOGIN, REFUSED, NOT_FOUND, RATE_LIMITED, CSRF, PROBE_PATH, ADMIN_NETWORK)

Key = tuple[str, str, str]  # (day, kind, key)


def fit(key: str) -> str:
    if len(key) <= KEY_LEN:
        return key
    return f"{key[: KEY_LEN - 17]}~{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


class Tally:
    """One poll's counts: (day, kind, key) → [n, last_ts]. Not thread-safe."""

    def __init__(self) -> None:
        self.counts: dict[Key, list[float]] = {}
        self._days: dict[int, str] = {}
        self._width: dict[tuple[str, str], int] = {}

    def add(self, kind: str, key: str, ts: float) -> None:
        d = int(ts // 86400)
        day = self._days.get(d)
        if day is None:
            if len(self._days) > 64:
                self._days.clear()
            day = self._days[d] = day_of(d * 86400.0)
        k = (day, kind, key)
        c = self.counts.get(k)
        if c is not None:
            c[0] += 1
            if ts > c[1]:
                c[1] = ts
            return
        width = self._width.get((day, kind), 0)
        if width >= MAX_BATCH_KEYS:
            k = (day, kind, OTHER)
            c = self.counts.get(k)
            if c is not None:
                c[0] += 1
                c[1] = max(c[1], ts)
                return
        else:
            self._width[(day, kind)] = width + 1
        self.counts[k] = [1, ts]

    def take(self) -> dict[Key, list[float]]:
        """The counts so far, and start again."""
        counts, self.counts, self._width = self.counts, {}, {}
        return counts


_UPSERTS: dict[str, Any] = {}


def _upsert(dialect: str) -> Any:
    """The dialect's "insert, or add to n and keep the later last_ts" (None: none known)."""
    if dialect not in _UPSERTS:
        table = t.security_tallies
        c = table.c
        stmt: Any = None
        if dialect in ("sqlite", "postgresql"):
            ins = (sqlite if dialect == "sqlite" else postgresql).insert(table)
            stmt = ins.on_conflict_do_update(
                index_elements=[c.day, c.kind, c.key],
                set_={
                    "n": c.n + ins.excluded.n,
                    "last_ts": case(
                        (ins.excluded.last_ts > c.last_ts, ins.excluded.last_ts),
                        else_=c.last_ts,
                    ),
                },
            )
        elif dialect in ("mysql", "mariadb"):
            my = mysql.insert(table)
            stmt = my.on_duplicate_key_update(
                n=c.n + my.inserted.n,
                last_ts=case(
                    (my.inserted.last_ts > c.last_ts, my.inserted.last_ts), else_=c.last_ts
                ),
            )
        _UPSERTS[dialect] = stmt
    return _UPSERTS[dialect]


class Writer:
    """Folds a poll's counts under the per-day cap and upserts them; remembers stored keys."""

    def __init__(self) -> None:
        self._stored: dict[tuple[str, str], set[str]] = {}

    def forget(self) -> None:
        """After a failed commit: what is stored is read again."""
        self._stored.clear()

    def write(self, conn: Connection, counts: dict[Key, list[float]]) -> int:
        """Upsert `counts`; returns how many rows it touched."""
        if not counts:
            return 0
        merged: dict[Key, list[float]] = {}
        for (day, kind, key), (n, last) in sorted(counts.items()):
            stored = self._keys(conn, day, kind)
            if key not in stored and key != OTHER:
                if len(stored) >= MAX_KEYS:
                    key = OTHER
                else:
                    stored.add(key)
            c = merged.setdefault((day, kind, key), [0, last])
            c[0] += n
            c[1] = max(c[1], last)
        days = {day for day, _ in self._stored}
        if len(days) > 3:  # yesterday's late lines still come; older days rarely do
            keep = sorted(days)[-3:]
            self._stored = {k: v for k, v in self._stored.items() if k[0] in keep}
        rows = [
            {"day": day, "kind": kind, "key": key, "n": int(n), "last_ts": last}
            for (day, kind, key), (n, last) in merged.items()
        ]
        upsert = _upsert(conn.dialect.name)
        if upsert is not None:
            conn.execute(upsert, rows)
        else:
            _read_then_write(conn, rows)
        return len(rows)

    def _keys(self, conn: Connection, day: str, kind: str) -> set[str]:
        stored = self._stored.get((day, kind))
        if stored is None:
            c = t.security_tallies.c
            query = select(c.key).where(c.day == day, c.kind == kind, c.key != OTHER)
            stored = self._stored[(day, kind)] = set(conn.execute(query).scalars())
        return stored


def _read_then_write(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Any other backend: update the rows that exist, insert the rest."""
    table = t.security_tallies
    c = table.c
    have = set()
    for row in rows:
        found = conn.execute(
            select(c.id).where(c.day == row["day"], c.kind == row["kind"], c.key == row["key"])
        ).first()
        if found is not None:
            have.add((row["day"], row["kind"], row["key"]))
    old = [r for r in rows if (r["day"], r["kind"], r["key"]) in have]
    new = [r for r in rows if (r["day"], r["kind"], r["key"]) not in have]
    if old:
        conn.execute(
            update(table)
            .where(c.day == bindparam("b_day"), c.kind == bindparam("b_kind"))
            .where(c.key == bindparam("b_key"))
            .values(
                n=c.n + bindparam("b_n"),
                last_ts=case(
                    (bindparam("b_last") > c.last_ts, bindparam("b_last")), else_=c.last_ts
                ),
            ),
            [
                {
                    "b_day": r["day"],
                    "b_kind": r["kind"],
                    "b_key": r["key"],
                    "b_n": r["n"],
                    "b_last": r["last_ts"],
                }
                for r in old
            ],
        )
    if new:
        conn.execute(insert(table), new)


def known_networks(conn: Connection, since: float) -> tuple[dict[str, dict[str, float]], set[str]]:
    """Each admin's networks seen since `since` ({account: {network: last_ts}}), and every
    account with any network on record (an account never seen learns its first network)."""
    c = t.security_tallies.c
    networks: dict[str, dict[str, float]] = {}
    seen: set[str] = set()
    query = select(c.key, c.last_ts).where(c.kind == ADMIN_NETWORK, c.key != OTHER)
    for key, last in conn.execute(query):
        account, _, network = key.rpartition("@")
        if not account:
            continue
        seen.add(account)
        if last >= since:
            known = networks.setdefault(account, {})
            known[network] = max(known.get(network, 0.0), float(last))
    return networks, seen
