"""The public status page (issue 18): customer notices and the subscribers who hear of them.

A notice is a draft until a commander approves it; approving publishes it and, in the same
transaction, queues one outbox row per confirmed subscriber, so a published notice is mailed
if and only if its publication was committed.
"""

from __future__ import annotations

from sqlalchemy import Column, Double, Index, Integer, String, Table, Text, UniqueConstraint

from nachtwacht.store.tables.base import metadata

status_notices = Table(
    "status_notices",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("incident_id", Integer, nullable=False),
    Column("kind", String(16), nullable=False),  # notice | update | resolved
    Column("state", String(16), nullable=False),  # draft | published | discarded
    Column("title", String(200), nullable=False),  # the public title, never the internal one
    Column("body", Text, nullable=False),
    Column("public_status", String(16), nullable=False),  # investigating .. resolved
    Column("components_json", Text, nullable=False),  # public component names
    Column("created_by", String(120), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("approved_by", String(120)),
    Column("published_at", Double),
    # the newest published notice of an unresolved incident: when the next public update is
    # due; the reminder to the commander claims it with a conditional update
    Column("remind_at", Double),
    # the drafts Nachtwacht makes by itself ("auto:notice:<incident>", "auto:resolved:<id>"):
    # unique, so two engines on one store that both see one due make it once
    Column("auto_key", String(64)),
    UniqueConstraint("auto_key"),
    Index("ix_status_notices_incident", "incident_id"),
    Index("ix_status_notices_state_published", "state", "published_at"),
    Index("ix_status_notices_remind", "remind_at"),
)

status_subscribers = Table(
    "status_subscribers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # email | webhook
    Column("address", String(300), nullable=False),  # an e-mail address or a URL
    # confirms and unsubscribes: 32 random bytes, in every link sent to this subscriber
    Column("token", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # pending | confirmed | unsubscribed
    Column("created_at", Double, nullable=False),
    Column("confirm_sent_at", Double),
    Column("confirmed_at", Double),
    Column("unsubscribed_at", Double),
    UniqueConstraint("kind", "address"),
    UniqueConstraint("token"),
    Index("ix_status_subscribers_state", "state"),
)
