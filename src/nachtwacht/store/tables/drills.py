"""Drills (issue 18): a synthetic fault run through the real pipeline, and the schedule's
reminders.

A drill's incident and alerts carry `drill_id` (incidents, alerts), so every message about them
is marked DRILL where it is rendered and every statistic can leave them out.
"""

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
    UniqueConstraint,
)

from nachtwacht.store.tables.base import BigId, metadata

drills = Table(
    "drills",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("scenario", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # adhoc | monthly | quarterly
    Column("severity", SmallInteger, nullable=False),
    Column("status", String(16), nullable=False),  # running | ended
    Column("started_at", Double, nullable=False),
    Column("started_by", String(120), nullable=False),
    Column("ended_at", Double),
    Column("incident_id", Integer),
    # which runbook steps were simulated and which ran for real (confirmed), as JSON
    Column("steps_json", Text),
    # the measurements when it ended (drills/measure.py), as JSON; `result` passed | missed
    Column("measures_json", Text),
    Column("result", String(16)),
    Index(None, "status"),
    Index(None, "started_at"),
)

# One row per schedule and period: the reminder that a drill is due is an obligation, inserted
# once (the unique pair) and claimed pending → sent by a conditional update with its messages.
drill_reminders = Table(
    "drill_reminders",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("schedule", String(32), nullable=False),  # monthly | quarterly
    Column("period", String(16), nullable=False),  # 2026-12 | 2026-Q4
    Column("due_at", Double, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("status", String(16), nullable=False),  # pending | sent | unreached (nobody to tell)
    Column("sent_at", Double),
    UniqueConstraint("schedule", "period"),
)
