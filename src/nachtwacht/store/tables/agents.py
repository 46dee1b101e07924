"""Remote probe agents (decision 25): their tokens, their contact, and the state of each located
probe at each location. The probe's combined state stays in `probe_state`."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from nachtwacht.store.tables.base import metadata

# One row per (probe, location) for probes with `locations:`: the same fields as `probe_state`,
# folded by the same `apply` (retries, pending), one stream per location.
probe_locations = Table(
    "probe_locations",
    metadata,
    Column("probe_id", Integer, primary_key=True, autoincrement=False),
    Column("location", String(32), primary_key=True),
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

# One row per agent location: the last contact, the last result sequence number stored (a
# retried batch is skipped up to it), and since when it is silent (set by the conditional
# update that raises the "agent silent" alert, cleared by the one that resolves it).
agents = Table(
    "agents",
    metadata,
    Column("location", String(32), primary_key=True),
    Column("first_seen", Double, nullable=False),
    Column("last_seen", Double, nullable=False),
    Column("last_seq", BigInteger, nullable=False, default=0),
    Column("silent_since", Double),
    Column("address", String(64)),
    Column("version", String(32)),
)

# Agent tokens: like API tokens (only a hash kept), but each is good for one location's agent
# endpoints and nothing else.
agent_tokens = Table(
    "agent_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(120), nullable=False),
    Column("token_hash", String(64), nullable=False),
    Column("location", String(32), nullable=False),
    Column("created_by", String(120), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("last_used_at", Double),
    Column("revoked_at", Double),
    UniqueConstraint("token_hash"),
)
