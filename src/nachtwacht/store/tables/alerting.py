"""Alerts, and what keeps them from paging: maintenance windows and silences."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Double,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
)

from nachtwacht.store.tables.base import metadata

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # one open alert per fingerprint: "probe:<name>", "am:<hash>", "api:<key>"
    Column("fingerprint", String(200), nullable=False),
    Column("source", String(16), nullable=False),  # probe | api | alertmanager
    Column("probe_id", Integer),
    Column("title", String(300), nullable=False),
    Column("component", String(120), nullable=False),
    Column("severity", SmallInteger, nullable=False),
    Column("status", String(16), nullable=False),  # firing | resolved
    Column("state", String(16)),  # the probe state that fired it: critical | warning
    Column("message", Text),
    Column("labels_json", Text),
    Column("started_at", Double, nullable=False),  # the first failing result
    Column("fired_at", Double, nullable=False),  # confirmed = detected
    Column("resolved_at", Double),
    Column("last_seen", Double, nullable=False),
    # why it did not page: maintenance | silence | inhibited (by a failing dependency)
    Column("muted_by", String(200)),
    Column("incident_id", Integer),
    # the drill (drills table) that injected it; NULL for every real alert
    Column("drill_id", Integer),
    Index(None, "fingerprint", "status"),
    Index(None, "incident_id"),
)

maintenance = Table(
    "maintenance",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("starts_at", Double, nullable=False),
    Column("ends_at", Double, nullable=False),
    Column("components_json", Text),
    Column("probes_json", Text),
    Column("created_by", String(120), nullable=False),
    Column("comment", Text),
    Column("ended_early_at", Double),
    Index(None, "ends_at"),
)

silences = Table(
    "silences",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # what it matches: probe:<name> | component:<name> | fingerprint:<fp> | all
    Column("matcher", String(300), nullable=False),
    Column("starts_at", Double, nullable=False),
    Column("ends_at", Double, nullable=False),
    Column("created_by", String(120), nullable=False),
    Column("comment", Text),
    Column("expired_early_at", Double),
    Index(None, "ends_at"),
)
