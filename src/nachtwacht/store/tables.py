"""The tables, as SQLAlchemy Core: results are written in bulk, so no ORM on the hot path.

Times are UTC epoch seconds in double-precision columns: one portable type across SQLite,
PostgreSQL and MariaDB, cheap to compare and to bucket (`minute` and `hour` are stored
alongside so rollups group by a plain integer on every dialect).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# BIGINT autoincrement on PostgreSQL/MariaDB, INTEGER (rowid) on SQLite
BigId = BigInteger().with_variant(Integer(), "sqlite")

probes = Table(
    "probes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(120), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("component", String(120), nullable=False),
    Column("config_json", Text, nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    UniqueConstraint("name"),
)

probe_state = Table(
    "probe_state",
    metadata,
    Column("probe_id", Integer, primary_key=True, autoincrement=False),
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

results = Table(
    "results",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("probe_id", Integer, nullable=False),
    Column("ts", Double, nullable=False),
    Column("minute", Integer, nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("value", Double),
    Column("latency_ms", Double),
    Column("lag_ms", Double),
    Column("message", Text),
    Index(None, "probe_id", "ts"),
    Index(None, "minute"),
)

state_changes = Table(
    "state_changes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("probe_id", Integer, nullable=False),
    Column("ts", Double, nullable=False),
    Column("from_state", String(16), nullable=False),
    Column("to_state", String(16), nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("value", Double),
    Column("message", Text),
    Column("first_failure", Double),
    Index(None, "probe_id", "ts"),
    Index(None, "ts"),
)

# Transitions the alert worker has not handled yet (healthchecks' `Flip`): written in the same
# transaction as the probe state that changed, deleted by the worker in the transaction that
# raises or resolves the alert. A crash anywhere between leaves the row for the next worker.
probe_flips = Table(
    "probe_flips",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("probe_id", Integer, nullable=False),
    Column("ts", Double, nullable=False),
    Column("from_state", String(16), nullable=False),
    Column("to_state", String(16), nullable=False),
    Column("first_failure", Double),
    Column("message", Text),
)


def _rollup(name: str, *extra: Column) -> Table:
    return Table(
        name,
        metadata,
        Column("probe_id", Integer, primary_key=True, autoincrement=False),
        Column("bucket", Integer, primary_key=True, autoincrement=False),
        *extra,
        Column("n", Integer, nullable=False),
        Column("n_ok", Integer, nullable=False),
        Column("n_warning", Integer, nullable=False),
        Column("n_critical", Integer, nullable=False),
        Column("n_unknown", Integer, nullable=False),
        Column("latency_sum", Double),
        Column("latency_min", Double),
        Column("latency_max", Double),
        Column("value_sum", Double),
        Column("value_min", Double),
        Column("value_max", Double),
    )


# bucket = epoch minute (ts // 60); `hour` lets the hourly rollup group by an integer
rollup_minute = _rollup("rollup_minute", Column("hour", Integer, nullable=False))
Index(None, rollup_minute.c.hour)
# bucket = epoch hour (ts // 3600)
rollup_hour = _rollup("rollup_hour")

heartbeat_pings = Table(
    "heartbeat_pings",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("token", String(128), nullable=False),
    Column("ts", Double, nullable=False),
    Column("event", String(8), nullable=False),  # success | start | fail
    Column("body", Text),
    Column("remote_addr", String(64)),
    Index(None, "token", "ts"),
)

engine_meta = Table(
    "engine_meta",
    metadata,
    Column("key", String(120), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", Double, nullable=False),
)

module_health = Table(
    "module_health",
    metadata,
    Column("module", String(64), primary_key=True),
    Column("instance", String(120), nullable=False),
    Column("last_tick", Double),
    Column("last_ok", Double),
    Column("last_error", Text),
    Column("last_error_at", Double),
    Column("consecutive_errors", Integer, nullable=False, default=0),
)

# -- alerts and incidents --------------------------------------------------------------------

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
    Index(None, "fingerprint", "status"),
    Index(None, "incident_id"),
)

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

# -- access control --------------------------------------------------------------------------
# Secrets (session cookies, API tokens, ingest keys) are stored as sha256 hex only: they are
# long random strings, so a fast hash is enough and a leaked table gives nothing to replay.

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False),
    Column("password_hash", String(255), nullable=False),  # argon2id, PHC string
    Column("role", String(16), nullable=False),  # viewer | responder | admin
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", Double, nullable=False),
    # wrong passwords in a row from any address: shown to admins; locks live in login_failures
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("last_login_at", Double),
    UniqueConstraint("username"),
)

# Wrong passwords per (username as typed, client address): the lockout. Keyed by the name as
# typed, not the user's id, so an unknown name counts and locks exactly like a real one, and a
# guesser at one address cannot lock the owner out at another.
login_failures = Table(
    "login_failures",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("ip", String(64), primary_key=True),  # "" when the address is unknown
    Column("failures", Integer, nullable=False),
    Column("first_at", Double, nullable=False),  # the count starts again lockout_for after this
    Column("locked_until", Double),
    Index(None, "first_at"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False),
    Column("user_id", Integer, nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("last_seen", Double, nullable=False),
    Column("expires_at", Double, nullable=False),  # slides with use, up to a fixed maximum
    Column("ip", String(64)),
    Column("user_agent", String(300)),
    Column("revoked_at", Double),
    UniqueConstraint("token_hash"),
    Index(None, "user_id"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(120), nullable=False),
    Column("token_hash", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_by", String(120), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("last_used_at", Double),
    Column("revoked_at", Double),
    # the user the token acts for: it works only while that user exists and is enabled, and
    # never with more than the user's role. None: made by the CLI without --owner
    Column("user_id", Integer),
    UniqueConstraint("token_hash"),
)

ingest_keys = Table(
    "ingest_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(120), nullable=False),
    Column("key_hash", String(64), nullable=False),
    Column("scope", String(16), nullable=False),  # alerts | errors | all
    Column("created_by", String(120), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("last_used_at", Double),
    Column("revoked_at", Double),
    UniqueConstraint("key_hash"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("ts", Double, nullable=False),
    Column("actor", String(120), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(300)),
    Column("detail_json", Text),
    Column("ip", String(64)),
    Index(None, "ts"),
    # the per-address login throttle counts recent failures from one address
    Index(None, "action", "ip", "ts"),
)

# -- error tracking ----------------------------------------------------------------------------
# Applications report with the Sentry SDK (or plain JSON); events are grouped into issues by a
# versioned fingerprint. The DSN key is stored as is: it sits in every client's DSN anyway and
# `project list` has to print it.

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
    UniqueConstraint("project_id", "fingerprint"),
    Index(None, "status", "last_seen"),
    Index(None, "last_seen"),
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

# -- analytics ---------------------------------------------------------------------------------

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

# -- runbooks, evidence, restoration, reviews ----------------------------------------------------

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
