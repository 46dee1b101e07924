"""Reading runbooks and runs for the CLI, the API and the incident page: plain views."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, select

from nachtwacht.clock import iso
from nachtwacht.runbooks import loader
from nachtwacht.runbooks.models import LoadedRunbook
from nachtwacht.runbooks.runner import RunError, find
from nachtwacht.runbooks.steps import describe
from nachtwacht.runbooks.variables import (
    BUILTIN_HELP,
    VariableError,
    input_type,
    known_names,
    variables,
)
from nachtwacht.store import paging
from nachtwacht.store import tables as t

FINISHED = ("succeeded", "partly_failed", "failed", "escalated", "refused", "planned")


def summary(loaded: LoadedRunbook) -> dict[str, Any]:
    steps = loaded.steps
    return {
        "name": loaded.name,
        "title": loaded.runbook.title,
        "description": loaded.runbook.description.strip(),
        "protocol": loaded.runbook.protocol,
        "source": loaded.source,
        "variant": loaded.variant,
        "steps": len(steps),
        "destructive_steps": sum(1 for s in steps if s.destructive),
        "inputs": {
            k: {"description": v.description, "default": v.default, "type": input_type(k, v)}
            for k, v in loaded.runbook.inputs.items()
        },
    }


def catalog(settings: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Every runbook, and the problems of files that could not be loaded."""
    found, problems = loader.load_all(settings, known_names(settings))
    return [summary(r) for r in found.values()], [str(p) for p in problems]


def detail(settings: Any, name: str, inputs: dict[str, str] | None = None) -> dict[str, Any]:
    """A runbook with each step as it would run here: variables in, secrets masked."""
    loaded = find(settings, name)
    try:
        values = variables(settings, loaded.runbook, inputs)
    except VariableError:
        # inputs not given yet: show them as placeholders rather than refusing to show
        given = {
            k: (inputs or {}).get(k) or v.default or f"<{k}>"
            for k, v in loaded.runbook.inputs.items()
        }
        values = variables(settings, None, None)
        values.values.update(given)
    steps = []
    for idx, step in enumerate(loaded.steps):
        steps.append(
            {
                "number": idx + 1,
                "id": step.id,
                "title": step.label,
                "kind": step.kind,  # type: ignore[attr-defined]
                "destructive": step.destructive,
                "on_failure": step.on_failure,
                "retries": step.retries,
                "if_var": step.if_var,
                "only_if_failed": step.only_if_failed,
                "does": describe(step, values, plan=True),
            }
        )
    used = sorted({n for s in loaded.steps for n in loader.references(s)})
    return summary(loaded) | {
        "steps": steps,
        "variables": {n: values.shown(n) for n in used if n in values.values},
    }


def run_view(conn: Connection, run_id: int) -> dict[str, Any]:
    run = (
        conn.execute(select(t.runbook_runs).where(t.runbook_runs.c.id == run_id)).mappings().first()
    )
    if run is None:
        raise RunError(f"no runbook run {run_id}", "run_id", kind="not_found")
    steps = conn.execute(
        select(t.runbook_steps)
        .where(t.runbook_steps.c.run_id == run_id)
        .order_by(t.runbook_steps.c.idx)
    ).mappings()
    return _run(dict(run)) | {
        "steps": [
            {
                "number": s["idx"] + 1,
                "id": s["name"],
                "kind": s["kind"],
                "status": s["status"],
                "started_at": iso(s["started_at"]),
                "finished_at": iso(s["finished_at"]),
                "attempts": s["attempts"],
                "exit_code": s["exit_code"],
                "output": s["output"],
                "confirmed_by": s["confirmed_by"],
            }
            for s in steps
        ]
    }


def _run(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "runbook": row["runbook"],
        "incident_id": row["incident_id"],
        "status": row["status"],
        "dry_run": bool(row["dry_run"]),
        "started_by": row["started_by"],
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "next_step": row["next_step"] + 1 if row["status"] == "waiting" else None,
        "inputs": json.loads(row["inputs_json"] or "{}"),
        "summary": row["summary"],
    }


def _query(incident_id: int | None, runbook: str | None) -> Any:
    query = select(t.runbook_runs).order_by(t.runbook_runs.c.id.desc())
    if incident_id is not None:
        query = query.where(t.runbook_runs.c.incident_id == incident_id)
    if runbook is not None:
        query = query.where(t.runbook_runs.c.runbook == runbook)
    return query


def list_runs(
    conn: Connection,
    incident_id: int | None = None,
    runbook: str | None = None,
    limit: int | None = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    rows = conn.execute(paging.window(_query(incident_id, runbook), limit, offset)).mappings()
    return [_run(dict(r)) for r in rows]


def count_runs(conn: Connection, incident_id: int | None = None, runbook: str | None = None) -> int:
    return paging.count(conn, _query(incident_id, runbook))


__all__ = ["BUILTIN_HELP", "FINISHED", "catalog", "count_runs", "detail", "list_runs", "run_view"]
