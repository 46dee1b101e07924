"""The commands `nachtwacht` loads on demand: their names, modules and help lines.

A command's module (and the services, models and libraries it imports) loads only when that
command runs or shows its own help, so `nachtwacht --help` and `nachtwacht status` do not pay
for the other thirty (docs/performance.md). The root group (cli/main.py) holds a `Stub` for
each until it is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer

# Every command outside cli/main.py, by name: (module, attribute, the line `--help` lists).
# The attribute is a Typer app (a group) or a function (a command); tests/test_cli_import_cost.py
# checks each line against the loaded command's.
LAZY: dict[str, tuple[str, str, str]] = {
    "audit": (
        "nachtwacht.auth.cli",
        "audit",
        "The audit log, newest first: logins, and every change to users, sessions and keys.",
    ),
    "status": (
        "nachtwacht.probes.cli",
        "status",
        "Every component and probe with its state; exit 0 ok, 1 degraded, 2 critical or no store.",
    ),
    "check": (
        "nachtwacht.probes.cli",
        "check",
        "Run probes once, now, and print the results; no server needed.",
    ),
    "verify": (
        "nachtwacht.checklist.cli",
        "verify",
        "Run the Service Restoration Checklist now; exit 1 if any item fails.",
    ),
    "export": (
        "nachtwacht.backup.cli",
        "export",
        "Export probes, results, alerts, incidents with timelines and errors as JSON.",
    ),
    "doctor": (
        "nachtwacht.watchdog.cli",
        "doctor",
        "Check this installation: config, store, migrations, disk, spool, clock, channels.",
    ),
    "probes": (
        "nachtwacht.probes.cli",
        "probes_app",
        "List configured probes.",
    ),
    "incident": (
        "nachtwacht.incidents.cli",
        "incident_app",
        "Declare, follow and resolve incidents.",
    ),
    "maintenance": (
        "nachtwacht.alerts.cli",
        "maintenance_app",
        "Maintenance windows: mute paging (never recording) for a while.",
    ),
    "silence": (
        "nachtwacht.alerts.cli",
        "silence_app",
        "Silences: mute paging for one probe, component or alert for a while.",
    ),
    "notify": (
        "nachtwacht.notify.cli",
        "notify_app",
        "Test notification channels; inspect the outbox.",
    ),
    "user": (
        "nachtwacht.auth.cli",
        "user_app",
        "Users of the dashboard and API: add, list, passwd, disable, enable, sessions.",
    ),
    "token": (
        "nachtwacht.auth.cli",
        "token_app",
        "API tokens for scripts: create (shown once), list, revoke.",
    ),
    "ingest-key": (
        "nachtwacht.auth.cli",
        "ingest_key_app",
        "Keys for ingestion endpoints (alerts, errors): create (shown once), list, revoke.",
    ),
    "oncall": (
        "nachtwacht.oncall.cli",
        "oncall_app",
        "Who is on call now and next; `oncall override` manages overrides.",
    ),
    "contacts": (
        "nachtwacht.oncall.cli",
        "contacts_app",
        "Contacts and whether their channels are verified: list, verify.",
    ),
    "agent": (
        "nachtwacht.agents.cli",
        "agent",
        "Run probes at this site for a Nachtwacht server and send it their results.",
    ),
    "agent-token": (
        "nachtwacht.agents.cli",
        "agent_token_app",
        "Tokens for remote probe agents, one location each: create (shown once), list, revoke.",
    ),
    "errors": (
        "nachtwacht.errors.cli",
        "errors_app",
        "Error issues: list, show, resolve, ignore.",
    ),
    "project": (
        "nachtwacht.errors.cli",
        "project_app",
        "Projects that report errors, and their DSNs.",
    ),
    "analytics": (
        "nachtwacht.analytics.cli",
        "analytics_app",
        "Error patterns and forecasts.",
    ),
    "baseline": (
        "nachtwacht.analytics.cli",
        "baseline_app",
        "Capture and compare performance baselines.",
    ),
    "flags": (
        "nachtwacht.analytics.cli",
        "flags_app",
        "Run-time feature flags of the protocol.",
    ),
    "cache": (
        "nachtwacht.analytics.cli",
        "cache_app",
        "The analytics results cache.",
    ),
    "runbook": (
        "nachtwacht.runbooks.cli",
        "runbook_app",
        "Runbooks: list, show, run.",
    ),
    "drill": (
        "nachtwacht.drills.cli",
        "drill_app",
        "Drills: run a synthetic fault through the real pipeline, measure it, report.",
    ),
    "evidence": (
        "nachtwacht.evidence.cli",
        "evidence_app",
        "Evidence bundles: capture and verify.",
    ),
    "report": (
        "nachtwacht.reviews.cli",
        "report_app",
        "Post-incident and monthly reports.",
    ),
    "followup": (
        "nachtwacht.reviews.cli",
        "followup_app",
        "Improvement actions from reviews.",
    ),
    "postmortem": (
        "nachtwacht.reviews.cli",
        "postmortem_app",
        "Fill in a post-incident review.",
    ),
    "backup": (
        "nachtwacht.backup.cli",
        "backup_app",
        "Backups of the store: create, list, verify, restore.",
    ),
    "store": (
        "nachtwacht.backup.cli",
        "store_app",
        "The store itself: integrity check.",
    ),
    "security": (
        "nachtwacht.security.cli",
        "security_app",
        "Security: the report, address blocks and lockdown, a Frappe site's sessions.",
    ),
    "statuspage": (
        "nachtwacht.statuspage.cli",
        "statuspage_app",
        "The public status page: customer notices and subscribers.",
    ),
}
# the order `nachtwacht --help` lists them in: single commands first, then the groups
ORDER = [
    *("audit", "status", "check", "verify", "export", "doctor", "init", "serve", "config"),
    *("probes", "incident", "maintenance", "silence", "notify", "user", "token", "ingest-key"),
    *(
        "oncall",
        "contacts",
        "agent",
        "agent-token",
        "errors",
        "project",
        "analytics",
        "baseline",
        "flags",
        "cache",
        "runbook",
    ),
    *(
        "evidence",
        "report",
        "followup",
        "postmortem",
        "backup",
        "store",
        "security",
        "drill",
        "statuspage",
    ),
]


class Stub(typer.core.TyperCommand):
    """A LAZY command before its module loads: its name and help line, for the listing."""


def load(name: str) -> Any:
    module_name, attribute, _ = LAZY[name]
    target = getattr(importlib.import_module(module_name), attribute)
    if isinstance(target, typer.Typer):
        group = typer.main.get_group(target)
        group.name = name
        return group
    holder = typer.Typer()
    holder.command(name)(target)
    return typer.main.get_group(holder).commands[name]
