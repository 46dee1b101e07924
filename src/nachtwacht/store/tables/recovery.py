"""After the alarm: runbook runs and their steps, evidence bundles, restoration checklists,
postmortems and their follow-ups.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from nachtwacht.store.tables.base import BigId, metadata

runbook_runs = Table(
    "runbook_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("runbook", String(120), nullable=False),
    Column("incident_id", Integer),
    # running | waiting (paused) | succeeded | failed | escalated | refused | planned (dry run)
    Column("status", String(16), nullable=False),
    Column("dry_run", Boolean, nullable=False, default=False),
    Column("started_by", String(120), nullable=False),
    Column("started_at", Double, nullable=False),
    Column("finished_at", Double),
    Column("next_step", Integer, nullable=False, default=0),  # where a paused run resumes
    # run-time inputs (`--var ip=...`), needed again when a paused run resumes
    Column("inputs_json", Text),
    # the runbook's definition when the run started: a run does not resume into an edited file
    Column("definition_sha256", String(64)),
    Column("summary", Text),  # why it ended or paused, in one line
    Index(None, "incident_id"),
)

runbook_steps = Table(
    "runbook_steps",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", Integer, nullable=False),
    Column("idx", Integer, nullable=False),
    Column("name", String(200), nullable=False),
    Column("kind", String(32), nullable=False),
    # ok | failed | skipped | waiting | refused | planned (dry run)
    Column("status", String(16), nullable=False),
    Column("started_at", Double, nullable=False),
    Column("finished_at", Double),
    Column("attempts", Integer, nullable=False, default=0),
    Column("exit_code", Integer),
    Column("output", Text),  # truncated, secrets redacted
    Column("confirmed_by", String(120)),
    Index(None, "run_id", "idx"),
)

evidence_bundles = Table(
    "evidence_bundles",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("incident_id", Integer),
    Column("path", String(500), nullable=False),
    Column("manifest_sha256", String(64), nullable=False),
    Column("bundle_sha256", String(64)),  # the tar.gz file itself: any changed byte shows
    Column("host", String(200), nullable=False),
    Column("files", Integer, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("created_by", String(120), nullable=False),
    Column("created_at", Double, nullable=False),
    Index(None, "incident_id"),
)

checklist_runs = Table(
    "checklist_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("incident_id", Integer),
    Column("passed", Boolean, nullable=False),
    Column("items_json", Text, nullable=False),  # [{"item", "ok", "detail"}]
    Column("ran_by", String(120), nullable=False),
    Column("ran_at", Double, nullable=False),
    Index(None, "incident_id"),
)

postmortems = Table(
    "postmortems",
    metadata,
    Column("incident_id", Integer, primary_key=True, autoincrement=False),
    Column("root_cause", Text),
    Column("contributing_factors", Text),
    Column("impact", Text),
    Column("lessons", Text),
    Column("updated_by", String(120), nullable=False),
    Column("updated_at", Double, nullable=False),
)

followups = Table(
    "followups",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("incident_id", Integer, nullable=False),
    Column("title", String(300), nullable=False),
    Column("owner", String(64), nullable=False),
    Column("due_at", Double, nullable=False),
    Column("status", String(16), nullable=False),  # open | done
    Column("created_by", String(120), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("done_at", Double),
    Column("reminded_at", Double),
    Index(None, "status", "due_at"),
    Index(None, "incident_id"),
)
