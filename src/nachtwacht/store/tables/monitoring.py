"""Probes, their state and results, the minute and hour rollups, heartbeat pings, and the
engine's own bookkeeping (its key-value state and each module's health).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from nachtwacht.store.tables.base import BigId, metadata

probes = Table(
    "probes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(120), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("component", String(120), nullable=False),
    Column("config_json", Text, nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    UniqueConstraint("name"),
)

probe_state = Table(
    "probe_state",
    metadata,
    Column("probe_id", Integer, primary_key=True, autoincrement=False),
    Column("state", String(16), nullable=False),
    Column("since", Double, nullable=False),
    Column("last_check", Double),
    Column("last_status", SmallInteger),
    Column("last_value", Double),
    Column("last_latency_ms", Double),
    Column("last_message", Text),
    Column("failures", Integer, nullable=False, default=0),
    Column("first_failure", Double),
)

results = Table(
    "results",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("probe_id", Integer, nullable=False),
    Column("ts", Double, nullable=False),
    Column("minute", Integer, nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("value", Double),
    Column("latency_ms", Double),
    Column("lag_ms", Double),
    Column("message", Text),
    # results of probes with `locations:` (decision 25): where it was seen, and for an agent's
    # results the agent's sequence number (stored in that order, each once)
    Column("location", String(32)),
    Column("seq", BigInteger),
    Index(None, "probe_id", "ts"),
    Index(None, "minute"),
)

state_changes = Table(
    "state_changes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("probe_id", Integer, nullable=False),
    Column("ts", Double, nullable=False),
    Column("from_state", String(16), nullable=False),
    Column("to_state", String(16), nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("value", Double),
    Column("message", Text),
    Column("first_failure", Double),
    Index(None, "probe_id", "ts"),
    Index(None, "ts"),
)

# Transitions the alert worker has not handled yet (healthchecks' `Flip`): written in the same
# transaction as the probe state that changed, deleted by the worker in the transaction that
# raises or resolves the alert. A crash anywhere between leaves the row for the next worker.
probe_flips = Table(
    "probe_flips",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("probe_id", Integer, nullable=False),
    Column("ts", Double, nullable=False),
    Column("from_state", String(16), nullable=False),
    Column("to_state", String(16), nullable=False),
    Column("first_failure", Double),
    Column("message", Text),
)


def _rollup(name: str, *extra: Column) -> Table:
    return Table(
        name,
        metadata,
        Column("probe_id", Integer, primary_key=True, autoincrement=False),
        Column("bucket", Integer, primary_key=True, autoincrement=False),
        *extra,
        Column("n", Integer, nullable=False),
        Column("n_ok", Integer, nullable=False),
        Column("n_warning", Integer, nullable=False),
        Column("n_critical", Integer, nullable=False),
        Column("n_unknown", Integer, nullable=False),
        Column("latency_sum", Double),
        Column("latency_min", Double),
        Column("latency_max", Double),
        Column("value_sum", Double),
        Column("value_min", Double),
        Column("value_max", Double),
    )


# bucket = epoch minute (ts // 60); `hour` lets the hourly rollup group by an integer
rollup_minute = _rollup("rollup_minute", Column("hour", Integer, nullable=False))
Index(None, rollup_minute.c.hour)

# bucket = epoch hour (ts // 3600)
rollup_hour = _rollup("rollup_hour")

heartbeat_pings = Table(
    "heartbeat_pings",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("token", String(128), nullable=False),
    Column("ts", Double, nullable=False),
    Column("event", String(8), nullable=False),  # success | start | fail
    Column("body", Text),
    Column("remote_addr", String(64)),
    Index(None, "token", "ts"),
)

engine_meta = Table(
    "engine_meta",
    metadata,
    Column("key", String(120), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", Double, nullable=False),
)

module_health = Table(
    "module_health",
    metadata,
    Column("module", String(64), primary_key=True),
    Column("instance", String(120), nullable=False),
    Column("last_tick", Double),
    Column("last_ok", Double),
    Column("last_error", Text),
    Column("last_error_at", Double),
    Column("consecutive_errors", Integer, nullable=False, default=0),
)

# One row per running `serve` process on the store (docs/decisions/0024): the probes are
# divided among the live ones. `beat` counts heartbeats: a reader judges a member alive by
# watching it change on its own clock, so clocks of different hosts are never compared.
members = Table(
    "members",
    metadata,
    Column("id", String(120), primary_key=True),  # host:pid, the outbox's lease owner too
    Column("host", String(100), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("role", String(16), nullable=False),
    Column("started_at", Double, nullable=False),
    Column("heartbeat_at", Double, nullable=False),  # the member's own clock: shown only
    Column("beat", Integer, nullable=False, default=0),
    Column("probes_owned", Integer, nullable=False, default=0),
    Column("dead_at", Double),  # set once, by the live member that claimed its death
    Column("dead_by", String(120)),
)
