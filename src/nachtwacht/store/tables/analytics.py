"""Analytics: baselines, the flags raised against them, and the cache of computed values."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from nachtwacht.store.tables.base import metadata

baselines = Table(
    "baselines",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(120), nullable=False),
    Column("captured_at", Double, nullable=False),
    Column("captured_by", String(120), nullable=False),
    Column("window_start", Double, nullable=False),
    Column("window_end", Double, nullable=False),
    Column("data_json", Text, nullable=False),  # {"probes": {...p50/p95}, "errors": ..., ...}
    Index(None, "captured_at"),
)

flags = Table(
    "flags",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("enabled", Boolean, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("updated_by", String(120), nullable=False),
)

analytics_cache = Table(
    "analytics_cache",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("value_json", Text, nullable=False),
    Column("computed_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
)
