"""The tables, as SQLAlchemy Core: results are written in bulk, so no ORM on the hot path.

One module per domain (monitoring, alerting, response, access, errors, analytics, recovery),
all on the one `metadata` of `base`; every Table is re-exported here, so `tables.incidents`
is what it always was. The imports keep this order rather than isort's: it is the order of
`metadata.tables`, which the backup's integrity check lists the tables in.
"""

# isort: off

from nachtwacht.store.tables.base import BigId, metadata
from nachtwacht.store.tables.monitoring import (
    probes,
    probe_state,
    results,
    state_changes,
    probe_flips,
    rollup_minute,
    rollup_hour,
    heartbeat_pings,
    engine_meta,
    module_health,
    members,
)
from nachtwacht.store.tables.alerting import alerts, maintenance, silences
from nachtwacht.store.tables.response import (
    incidents,
    incident_events,
    incident_roles,
    outbox,
    oncall_overrides,
)
from nachtwacht.store.tables.access import (
    users,
    login_failures,
    sessions,
    api_tokens,
    ingest_keys,
    audit_log,
)
from nachtwacht.store.tables.errors import (
    error_projects,
    error_issues,
    error_events,
    error_issue_hours,
    request_minutes,
)
from nachtwacht.store.tables.analytics import baselines, flags, analytics_cache
from nachtwacht.store.tables.recovery import (
    runbook_runs,
    runbook_steps,
    evidence_bundles,
    checklist_runs,
    postmortems,
    followups,
)
from nachtwacht.store.tables.agents import probe_locations, agents, agent_tokens
from nachtwacht.store.tables.security import security_blocks, security_tallies
from nachtwacht.store.tables.access import audit_head
from nachtwacht.store.tables.readiness import (
    contact_verifications,
    readiness_obligations,
    restore_tests,
)
from nachtwacht.store.tables.drills import drills, drill_reminders
from nachtwacht.store.tables.statuspage import status_notices, status_subscribers
# isort: on

__all__ = [
    "BigId",
    "metadata",
    "probes",
    "probe_state",
    "results",
    "state_changes",
    "probe_flips",
    "rollup_minute",
    "rollup_hour",
    "heartbeat_pings",
    "engine_meta",
    "module_health",
    "members",
    "alerts",
    "maintenance",
    "silences",
    "incidents",
    "incident_events",
    "incident_roles",
    "outbox",
    "oncall_overrides",
    "users",
    "login_failures",
    "sessions",
    "api_tokens",
    "ingest_keys",
    "audit_log",
    "error_projects",
    "error_issues",
    "error_events",
    "error_issue_hours",
    "request_minutes",
    "baselines",
    "flags",
    "analytics_cache",
    "runbook_runs",
    "runbook_steps",
    "evidence_bundles",
    "checklist_runs",
    "postmortems",
    "followups",
    "probe_locations",
    "agents",
    "agent_tokens",
    "security_blocks",
    "security_tallies",
    "audit_head",
    "contact_verifications",
    "readiness_obligations",
    "restore_tests",
    "drills",
    "drill_reminders",
    "status_notices",
    "status_subscribers",
]
