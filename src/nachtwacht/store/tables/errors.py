"""Error tracking, and Frappe's request log.

Applications report with the Sentry SDK (or plain JSON); events are grouped into issues by a
versioned fingerprint. The DSN key is stored as is: it sits in every client's DSN anyway and
`project list` has to print it.
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

error_projects = Table(
    "error_projects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(120), nullable=False),
    Column("public_key", String(64), nullable=False),
    Column("environment", String(64)),  # the default when an event names none
    Column("created_by", String(120), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    UniqueConstraint("name"),
    UniqueConstraint("public_key"),
)

error_issues = Table(
    "error_issues",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", Integer, nullable=False),
    Column("fingerprint", String(64), nullable=False),  # sha256 hex of the grouping key
    Column("fingerprint_version", SmallInteger, nullable=False),
    Column("title", String(300), nullable=False),
    Column("culprit", String(300)),
    Column("exc_type", String(200)),
    Column("level", String(16), nullable=False),
    Column("category", String(32)),  # database | network | timeout | permission | ...
    Column("status", String(16), nullable=False),  # unresolved | resolved | ignored
    Column("first_seen", Double, nullable=False),
    Column("last_seen", Double, nullable=False),
    Column("count", Integer, nullable=False, default=0),
    Column("environment", String(64)),
    Column("first_release", String(200)),
    Column("last_event_id", String(32)),
    Column("resolved_at", Double),
    Column("resolved_by", String(120)),
    Column("regressed_at", Double),
    # an alert to raise or resolve: new | regression | resolved (errors/alerting.py claims it)
    Column("alert_due", String(16)),
    Column("alert_due_at", Double),
    UniqueConstraint("project_id", "fingerprint"),
    Index(None, "status", "last_seen"),
    Index(None, "last_seen"),
    Index(None, "alert_due"),
)

error_events = Table(
    "error_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("project_id", Integer, nullable=False),
    Column("event_id", String(32), nullable=False),  # 32 hex digits, as Sentry sends it
    Column("issue_id", Integer, nullable=False),
    Column("ts", Double, nullable=False),  # when it happened (the event's timestamp)
    Column("received_at", Double, nullable=False),
    Column("level", String(16), nullable=False),
    Column("environment", String(64)),
    Column("release", String(200)),
    Column("server_name", String(200)),
    Column("transaction", String(300)),
    Column("message", Text),
    Column("data_json", Text, nullable=False),  # the event as received, trimmed to the limit
    UniqueConstraint("project_id", "event_id"),
    Index(None, "issue_id", "ts"),
    Index(None, "ts"),
)

# events per issue per epoch hour (ts // 3600): trends and sparklines without scanning events
error_issue_hours = Table(
    "error_issue_hours",
    metadata,
    Column("issue_id", Integer, primary_key=True, autoincrement=False),
    Column("hour", Integer, primary_key=True, autoincrement=False),
    Column("n", Integer, nullable=False),
    Index(None, "hour"),
)

# request latency and status codes from Frappe's monitor.json.log, per site per minute
request_minutes = Table(
    "request_minutes",
    metadata,
    Column("source", String(120), primary_key=True),
    Column("minute", Integer, primary_key=True, autoincrement=False),
    Column("n", Integer, nullable=False),
    Column("n_5xx", Integer, nullable=False),
    Column("n_4xx", Integer, nullable=False),
    Column("duration_sum_ms", Double, nullable=False),
    Column("duration_max_ms", Double, nullable=False),
    Column("p95_ms", Double),
)
