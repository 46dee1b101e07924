"""Remote probe agents on the server's side: their tokens, their results, their silence.

Plain functions over a Connection (the caller owns the transaction); decision 25 says why.

- An agent token (`nwa_…`) is good for one location's agent endpoints and nothing else.
- A batch of results carries the agent's sequence numbers. `accept_results` stores those above
  the location's `last_seq` in order, moves `last_seq` with a conditional update (a second
  process storing the same batch at the same time finds it moved and stores nothing), and
  skips the rest: a retried batch is never counted twice.
- `check_silence` marks an agent silent past `server.agent_silent_after` with a conditional
  update that is also the claim of its alert: one alert, raised once, in the transaction that
  marks it; its location's results then count as unknown for every quorum. The agent's next
  contact clears the mark, resolves the alert and combines its probes again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, insert, select, update

from nachtwacht.alerts import service as alerts
from nachtwacht.alerts.service import Signal
from nachtwacht.auth.checks import AuthError, check_name
from nachtwacht.auth.credentials import active_rows, create_secret, revoke_row, secret_view, touch
from nachtwacht.auth.passwords import secret_hash
from nachtwacht.clock import iso
from nachtwacht.config.schema import Settings
from nachtwacht.probes import locations, rollups
from nachtwacht.probes.base import ProbeConfig
from nachtwacht.problems import Problem
from nachtwacht.store import claims
from nachtwacht.store import tables as t

AGENT_PREFIX = "nwa_"
COMPONENT = "agents"  # the component agent alerts are grouped under


class AgentError(Problem):
    """An agent request that cannot be done."""


# -- tokens -------------------------------------------------------------------------------------


def check_location(value: str) -> str:
    text = value.strip()
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,31}", text):
        raise AuthError(
            f"'{value}' is not a location name: 1-32 characters of a-z 0-9 _ . -",
            field="location",
        )
    return text


def create_agent_token(
    conn: Connection, name: str, location: str, now: float, *, actor: str, ip: str | None = None
) -> dict[str, Any]:
    """A new agent token for `location`; the result's `token` is the only time it exists."""
    name, location = check_name(name), check_location(location)
    token_id, token = create_secret(
        conn, t.agent_tokens, "agent_token", name, "token_hash", ("location", location),
        AGENT_PREFIX, now, actor, ip,
    )  # fmt: skip
    row = conn.execute(select(t.agent_tokens).where(t.agent_tokens.c.id == token_id)).mappings()
    # The location is expected from now on: an agent that never starts is silent after the
    # bound like one that stopped. Without the row it raised nothing, and a probe whose
    # quorum needs that location stayed "degraded" and paged nobody through a real outage.
    _agent_row(conn, location, now)
    return {**secret_view(dict(row.one()), "location"), "token": token}


def list_agent_tokens(conn: Connection, *, include_revoked: bool = False) -> list[dict[str, Any]]:
    query = active_rows(t.agent_tokens, include_revoked)
    return [secret_view(dict(r), "location") for r in conn.execute(query).mappings()]


def revoke_agent_token(
    conn: Connection, token_id: int, now: float, *, actor: str, ip: str | None = None
) -> dict[str, Any]:
    view = select(t.agent_tokens)
    return revoke_row(
        conn, t.agent_tokens, "agent_token", token_id, now, actor, ip, view, "location"
    )


def resolve_agent_token(conn: Connection, token: str | None, now: float) -> str:
    """The location an agent token is for; AuthError 401 when it is missing or unknown."""
    if not token:
        raise AuthError("an agent token is required (Authorization: Bearer nwa_…)",
                        kind="unauthenticated")  # fmt: skip
    if not token.startswith(AGENT_PREFIX):
        # an API token or ingest key: known or not, it is the wrong kind here (the checklist's
        # admin token walks every GET endpoint and takes 403 as "answering")
        raise AuthError("this endpoint takes an agent token (nwa_…), not an API token",
                        "token", "forbidden")  # fmt: skip
    c = t.agent_tokens.c
    row = None
    if len(token) <= 200:
        query = select(c.id, c.location).where(
            c.token_hash == secret_hash(token), c.revoked_at.is_(None)
        )
        row = conn.execute(query).first()
    if row is None:
        raise AuthError("unknown or revoked agent token", "token", "unauthenticated")
    touch(conn, t.agent_tokens, row.id, now)
    return str(row.location)


# -- what an agent runs -------------------------------------------------------------------------


def probes_at(settings: Settings, location: str) -> list[ProbeConfig]:
    return [p for p in settings.probes if p.enabled and location in p.locations]


def probe_ids(conn: Connection, names: Iterable[str]) -> dict[str, int]:
    wanted = list(names)
    if not wanted:
        return {}
    rows = conn.execute(select(t.probes.c.id, t.probes.c.name).where(t.probes.c.name.in_(wanted)))
    return {row.name: int(row.id) for row in rows}


def located_configs(conn: Connection, settings: Settings) -> dict[int, ProbeConfig]:
    """id -> config of every probe with `locations:`."""
    located = [p for p in settings.probes if p.locations]
    ids = probe_ids(conn, (p.name for p in located))
    return {ids[p.name]: p for p in located if p.name in ids}


# -- contact and results ------------------------------------------------------------------------


def _agent_row(conn: Connection, location: str, now: float) -> Any:
    a = t.agents.c
    row = conn.execute(select(t.agents).where(a.location == location).with_for_update()).first()
    if row is None:
        conn.execute(
            insert(t.agents).values(location=location, first_seen=now, last_seen=now, last_seq=0)
        )
        row = conn.execute(select(t.agents).where(a.location == location)).first()
    return row


def touch_agent(
    conn: Connection,
    settings: Settings,
    location: str,
    now: float,
    address: str | None = None,
    version: str | None = None,
) -> tuple[Any, int]:
    """Record a contact; an agent that was silent is back. Returns (its row, pages queued)."""
    row = _agent_row(conn, location, now)
    values: dict[str, Any] = {"last_seen": now}
    if address is not None:
        values["address"] = address[:64]
    if version is not None:
        values["version"] = version[:32]
    a = t.agents.c
    conn.execute(update(t.agents).where(a.location == location).values(**values))
    queued = 0
    # the claim of the resolution: only the process that clears the mark resolves
    if row.silent_since is not None and claims.claim(
        conn, t.agents, location, a.silent_since.is_not(None), values={"silent_since": None}
    ):
        signal = _silence_signal(location, row.silent_since, now, settings, firing=False)
        queued += alerts.process(conn, settings, signal, now).queued
        _recombine_location(conn, settings, location, now)
    return row, queued


def accept_results(
    conn: Connection,
    settings: Settings,
    location: str,
    results: Sequence[Mapping[str, Any]],
    now: float,
    address: str | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """Store a batch of an agent's results (see the module doc); the caller commits."""
    seqs = [int(r["seq"]) for r in results]
    if any(b <= a for a, b in zip(seqs, seqs[1:], strict=False)):
        raise AgentError("results must come in increasing seq order", field="results")
    row, queued = touch_agent(conn, settings, location, now, address, version)
    last = int(row.last_seq)
    fresh = [r for r in results if int(r["seq"]) > last]
    duplicates = len(results) - len(fresh)
    if not fresh:
        return _answer(0, duplicates, 0, last, queued, False)
    new_last = int(fresh[-1]["seq"])
    a = t.agents.c
    if not claims.claim(conn, t.agents, location, a.last_seq == last,
                        values={"last_seq": new_last}):  # fmt: skip
        raise AgentError("another request stored results of this agent; send again",
                         kind="conflict")  # fmt: skip
    configs = located_configs(conn, settings)
    silent = locations.silent_locations(conn)
    by_probe: dict[int, list[locations.Observation]] = {}
    refused = 0
    for r in fresh:
        cfg = configs.get(int(r["probe_id"]))
        if cfg is None or location not in cfg.locations:
            refused += 1  # not (or no longer) a probe of this location: never stored
            continue
        by_probe.setdefault(int(r["probe_id"]), []).append(
            locations.Observation(
                float(r["ts"]), int(r["status"]), r.get("value"), r.get("latency_ms"),
                r.get("lag_ms"), r.get("message"), int(r["seq"]),
            )
        )  # fmt: skip
    changed = False
    late = rollups.late_after(now)
    # probes in id order, whoever locks them: two transactions never wait on each other in turn
    for pid, obs in sorted(by_probe.items()):
        changed |= bool(
            locations.ingest(conn, pid, configs[pid], location, obs, silent, late_after=late)
        )
    stored = len(fresh) - refused
    return _answer(stored, duplicates, refused, new_last, queued, changed)


def _answer(
    stored: int, duplicates: int, refused: int, last_seq: int, queued: int, changed: bool
) -> dict[str, Any]:
    return {
        "stored": stored,
        "duplicates": duplicates,
        "refused": refused,
        "last_seq": last_seq,
        "queued": queued,
        "changed": changed,
    }


# -- silence ------------------------------------------------------------------------------------


def _silence_signal(
    location: str, since: float, now: float, settings: Settings, firing: bool
) -> Signal:
    bound = spoken(settings.server.agent_silent_after)
    return Signal(
        fingerprint=f"agent:{location}",
        source="agent",
        title=f"agent {location} silent for {bound}",
        component=COMPONENT,
        severity=2,
        firing=firing,
        started_at=since,
        detected_at=now,
        message=(
            f"the agent at {location} has not reported since {iso(since)}; its probes' results "
            "from there count as unknown until it reports again"
        ),
        labels={"location": location},
    )


def spoken(seconds: float) -> str:
    """`2 min`, `90 s`: how long an agent has been silent, for a title."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} s"


def _recombine_location(conn: Connection, settings: Settings, location: str, now: float) -> int:
    configs = located_configs(conn, settings)
    silent = locations.silent_locations(conn)
    changed = 0
    for pid, cfg in sorted(configs.items()):
        if location in cfg.locations:
            changed += locations.recombine(conn, pid, cfg, now, silent) is not None
    return changed


def _has_token() -> Any:
    k = t.agent_tokens.c
    return select(k.id).where(k.location == t.agents.c.location, k.revoked_at.is_(None)).exists()


def silent_candidates(conn: Connection, now: float, bound: float) -> list[tuple[str, float]]:
    """Agents quiet past `bound` and not marked yet. An agent whose every token is revoked is
    retired, not silent."""
    a = t.agents.c
    rows = conn.execute(
        select(a.location, a.last_seen).where(
            a.silent_since.is_(None), a.last_seen < now - bound, _has_token()
        )
    ).all()
    return [(row.location, float(row.last_seen)) for row in rows]


def retire_revoked(conn: Connection, settings: Settings, now: float) -> tuple[list[str], int]:
    """Silent agents whose tokens were all revoked: their alerts resolve (they were retired).

    Returns (the locations retired now, pages queued)."""
    a = t.agents.c
    rows = conn.execute(
        select(a.location, a.silent_since).where(a.silent_since.is_not(None), ~_has_token())
    ).all()
    done, queued = [], 0
    for row in rows:
        if claims.claim(conn, t.agents, row.location, a.silent_since.is_not(None),
                        values={"silent_since": None}):  # fmt: skip
            signal = _silence_signal(row.location, row.silent_since, now, settings, firing=False)
            signal.message = f"the agent at {row.location} was retired (its tokens revoked)"
            queued += alerts.process(conn, settings, signal, now).queued
            done.append(str(row.location))
    return done, queued


def mark_silent(
    conn: Connection, settings: Settings, location: str, now: float
) -> tuple[bool, int]:
    """Claim one agent's silence (conditional update), raise its alert, combine its probes.

    Returns (this call marked it, pages queued); False when another process did, or it spoke.
    """
    bound = settings.server.agent_silent_after
    a = t.agents.c
    row = conn.execute(select(a.last_seen).where(a.location == location)).first()
    if row is None:
        return False, 0
    silent = (a.silent_since.is_(None), a.last_seen < now - bound)
    if not claims.claim(conn, t.agents, location, *silent, values={"silent_since": now}):
        return False, 0
    signal = _silence_signal(location, float(row.last_seen), now, settings, firing=True)
    queued = alerts.process(conn, settings, signal, now).queued
    _recombine_location(conn, settings, location, now)
    return True, queued


def agent_overview(conn: Connection, now: float, bound: float) -> list[dict[str, Any]]:
    out = []
    for row in conn.execute(select(t.agents).order_by(t.agents.c.location)).mappings():
        out.append(
            {
                "location": row["location"],
                "first_seen": iso(row["first_seen"]),
                "last_seen": iso(row["last_seen"]),
                "seconds_since_contact": round(max(0.0, now - row["last_seen"]), 1),
                "silent": row["silent_since"] is not None,
                "silent_since": iso(row["silent_since"]),
                "last_seq": row["last_seq"],
                "address": row["address"],
                "version": row["version"],
                "silent_after": bound,
            }
        )
    return out
