"""Readiness (issue 18): verified contacts, handoff summaries and proven restores.

What keeps the protocol working while it is not being used: a confirm link per contact and
channel (only the token's hash is stored), the obligations sent once per period (a handoff's
summary, a quarter's re-verification), and the result of each scheduled restore test.
"""

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
    UniqueConstraint,
)

from nachtwacht.store.tables.base import BigId, metadata

# One row per confirm link sent. `status`: sent → confirmed, or replaced when a newer link
# for the same contact and channel was sent (only the newest link confirms).
contact_verifications = Table(
    "contact_verifications",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("contact", String(64), nullable=False),
    Column("channel", String(64), nullable=False),  # a channel name of notify.channels
    Column("address", String(320)),  # what was verified: the e-mail, phone or chat handle
    Column("token_hash", String(64), nullable=False),  # sha256 hex of the link's token
    Column("status", String(16), nullable=False),  # sent | confirmed | replaced
    Column("reason", String(16), nullable=False),  # manual | periodic
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("confirmed_at", Double),
    Column("outbox_id", Integer),
    UniqueConstraint("token_hash"),
    Index("ix_contact_verifications_contact_channel", "contact", "channel"),
)

# Something that must happen once per key: `handoff:<rotation>:<epoch>`,
# `reverify:<contact>:<channel>:<period>`. Inserted when due (the unique key keeps one row),
# then claimed by a conditional update of `done_at` in the transaction that queues its messages.
readiness_obligations = Table(
    "readiness_obligations",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("key", String(200), nullable=False),
    Column("kind", String(32), nullable=False),  # handoff | reverify
    Column("created_at", Double, nullable=False),
    Column("done_at", Double),
    Column("data_json", Text),
    UniqueConstraint("key"),
)

# One row per restore test: which backup, into what scratch store, and what the checks found.
restore_tests = Table(
    "restore_tests",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("started_at", Double, nullable=False),
    Column("finished_at", Double, nullable=False),
    Column("backup", String(300)),  # the backup's name (None: there was none to test)
    Column("backup_created_at", Double),
    Column("scratch", String(300), nullable=False),  # where it was restored, without secrets
    Column("ok", Boolean, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("summary", Text, nullable=False),
    Column("problems_json", Text, nullable=False),
    Column("trigger", String(16), nullable=False),  # scheduled | manual
    Index("ix_restore_tests_finished_at", "finished_at"),
)
