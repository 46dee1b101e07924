"""Security monitoring (issue 17): address blocks and the daily tallies the report reads.

Findings themselves are alerts (`security:<rule>:<key>`); these tables hold what an alert
cannot: the firewall blocks in force and what the logs showed per day.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from nachtwacht.store.tables.base import BigId, metadata

# One row per block. The firewall rule is an obligation: `state` moves pending → active (the
# rule is in the firewall) → expiring (its time is up, the removal is claimed) → removed; each
# move is a conditional update, so two processes never both apply or both remove one block,
# and a crash between the firewall call and the commit is retried, not forgotten.
security_blocks = Table(
    "security_blocks",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("address", String(64), nullable=False),  # an address or a network (CIDR)
    Column("reason", Text),
    Column("created_by", String(120), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double),  # NULL: until unblocked by hand
    Column("state", String(16), nullable=False),  # pending | active | expiring | removed | failed
    Column("applied_at", Double),
    Column("removed_at", Double),
    Column("removed_by", String(120)),
    Column("incident_id", Integer),
    Column("rule", String(64)),  # the finding's rule when a finding asked for the block
    Column("claimed_by", String(64)),  # the member applying or removing it
    Column("claimed_until", Double),
    Column("error", Text),
    Index("ix_security_blocks_state_expires", "state", "expires_at"),
    Index("ix_security_blocks_address", "address"),
)

# What the logs showed, per UTC day: `kind` is failed_login | login | refused (401/403) |
# not_found | rate_limited | csrf | probe_path; `key` an address, "user:<name>" or a path.
# Written with the read positions in one transaction by the watch; keys beyond a per-day cap
# per kind fold into "(other)" so a spray of addresses cannot grow the table without bound.
security_tallies = Table(
    "security_tallies",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("day", String(10), nullable=False),  # YYYY-MM-DD, UTC
    Column("kind", String(32), nullable=False),
    Column("key", String(200), nullable=False),
    Column("n", BigInteger, nullable=False),
    Column("last_ts", Double, nullable=False),
    UniqueConstraint("day", "kind", "key"),
    Index("ix_security_tallies_kind_day", "kind", "day"),
)
