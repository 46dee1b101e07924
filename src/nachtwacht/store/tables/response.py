"""Incident response: incidents, their timeline and roles, the notification outbox, on-call
overrides.
"""

from __future__ import annotations

from sqlalchemy import (
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

incidents = Table(
    "incidents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("title", String(300), nullable=False),
    Column("severity", SmallInteger, nullable=False),
    Column("status", String(16), nullable=False),  # investigating..closed
    Column("component", String(120)),
    Column("origin", String(16), nullable=False),  # alert | declared
    Column("commander", String(64)),
    Column("impact", Text),
    Column("started_at", Double, nullable=False),
    Column("detected_at", Double, nullable=False),
    Column("acknowledged_at", Double),
    Column("acknowledged_by", String(120)),
    Column("mitigated_at", Double),
    Column("resolved_at", Double),
    Column("closed_at", Double),
    Column("response_due_at", Double, nullable=False),
    Column("breached_at", Double),
    Column("policy", String(64), nullable=False),
    Column("next_step", Integer, nullable=False, default=0),  # index of the next escalation step
    Column("next_step_at", Double),
    Column("pages_sent", Integer, nullable=False, default=0),  # pages of the repeating step
    Column("next_page_at", Double),
    Column("update_due_at", Double),
    Column("paged", Boolean, nullable=False, default=False),
    Column("muted", Boolean, nullable=False, default=False),
    Column("ack_token", String(64), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    # the drill this incident is (drills table); NULL for a real one. Statistics leave drills out
    Column("drill_id", Integer),
    Index(None, "status"),
    Index(None, "component", "status"),
    UniqueConstraint("ack_token"),
)

incident_events = Table(
    "incident_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("incident_id", Integer, nullable=False),
    Column("ts", Double, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("actor", String(120), nullable=False),
    Column("message", Text, nullable=False),
    Column("data_json", Text),
    Index(None, "incident_id", "ts"),
)

incident_roles = Table(
    "incident_roles",
    metadata,
    Column("incident_id", Integer, primary_key=True, autoincrement=False),
    Column("contact", String(64), primary_key=True),
    Column("role", String(16), nullable=False),  # commander | responder
    Column("added_at", Double, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(200), nullable=False),
    Column("incident_id", Integer),
    Column("kind", String(32), nullable=False),  # page | notification | update | resolved | ...
    Column("channel", String(64), nullable=False),
    Column("contact", String(64)),
    Column("address", String(300)),
    Column("subject", String(300), nullable=False),
    Column("body", Text, nullable=False),
    Column("payload_json", Text),
    Column("status", String(16), nullable=False),  # pending | sending | sent | dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Double, nullable=False),
    Column("claimed_by", String(120)),
    Column("claimed_until", Double),
    Column("last_error", Text),
    Column("created_at", Double, nullable=False),
    Column("sent_at", Double),
    UniqueConstraint("idempotency_key"),
    Index(None, "status", "next_attempt_at"),
    Index(None, "incident_id"),
)

oncall_overrides = Table(
    "oncall_overrides",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rotation", String(64), nullable=False),
    Column("contact", String(64), nullable=False),
    Column("starts_at", Double, nullable=False),
    Column("ends_at", Double, nullable=False),
    Column("created_by", String(120), nullable=False),
    Index(None, "rotation", "ends_at"),
)
