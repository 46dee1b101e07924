"""`nachtwacht drill ...`: run a drill, list scenarios and drills, end one, print its report.

The drill's pages are queued in the outbox like any incident's; a running `nachtwacht serve`
sends them within a second (and ends the drill when its incident is resolved).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy import Connection

from nachtwacht.cli.common import ConfigOption, JsonOption, fail, print_json, settings
from nachtwacht.cli.common import cli_actor as _actor
from nachtwacht.cli.common import open_store as _store
from nachtwacht.clock import SystemClock
from nachtwacht.config.schema import Settings
from nachtwacht.drills import report, scenarios, schedule, service
from nachtwacht.drills.measure import words

drill_app = typer.Typer(
    help="Drills: run a synthetic fault through the real pipeline, measure it, report.",
    no_args_is_help=True,
)
T = TypeVar("T")
ActorOption = Annotated[
    str | None, typer.Option("--actor", help="Who is doing this (default: $USER).")
]


def _run(
    config: str | None, work: Callable[[Connection, Settings, float], T]
) -> tuple[T, Settings]:
    """`work` in one transaction, committed before the caller prints what it returns."""
    cfg = settings(config)
    with _store(cfg) as store, store.begin() as conn:
        return work(conn, cfg, SystemClock().now()), cfg


def _local(ts: float | None, cfg: Settings) -> str:
    return datetime.fromtimestamp(ts, cfg.zone).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _title(name: str) -> str:
    found = scenarios.get(name)
    return found.title if found else name


@drill_app.command("run")
def run(
    scenario: Annotated[str, typer.Argument(help="A scenario name (`nachtwacht drill list`).")],
    severity: Annotated[
        int | None, typer.Option("--severity", "-s", min=1, max=3, help="Override: 1, 2 or 3.")
    ] = None,
    schedule_name: Annotated[
        str, typer.Option("--schedule", help="The schedule this drill fulfils, or adhoc.")
    ] = "adhoc",
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", help="Confirm: the scenario's real steps (read-only checks) may run for real."
        ),
    ] = False,
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start a drill: the scenario's synthetic alert goes through the real pipeline and pages
    the on-call engineer, every message marked DRILL."""

    def work(conn: Connection, cfg: Settings, now: float) -> dict[str, Any]:
        return service.run(
            conn,
            cfg,
            scenario,
            now,
            _actor(actor),
            severity=severity,
            kind=schedule_name,
            confirmed=yes,
        )

    drill, cfg = _run(config, work)
    with _store(cfg) as store:
        run_id = asyncio.run(
            service.attach_runbook(store, cfg, SystemClock(), drill, _actor(actor))
        )
    if as_json:
        print_json({**drill, "runbook_run": run_id})
        return
    typer.echo(
        f"DRILL #{drill['id']} started: {drill['scenario']} (S{drill['severity']}), "
        f"incident #{drill['incident_id']}"
    )
    real = [s["id"] for s in drill["steps"] if s["mode"] == "real"]
    simulated = len(drill["steps"]) - len(real)
    if drill["steps"]:
        typer.echo(
            f"runbook steps: {simulated} simulated"
            + (f", may be run for real (confirmed): {', '.join(real)}" if real else "")
        )
    if run_id is not None:
        typer.echo(f"runbook attached to incident #{drill['incident_id']} as dry run #{run_id}")
    typer.echo(
        f"end it with: nachtwacht drill end {drill['id']} "
        f"(or resolve incident #{drill['incident_id']})"
    )


@drill_app.command("list")
def list_scenarios(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The scenarios, and the schedule: which drill is due or overdue."""
    states, cfg = _run(config, lambda conn, cfg, now: schedule.status(conn, cfg, now))
    found = scenarios.builtin()
    if as_json:
        print_json(
            {
                "scenarios": [s.model_dump() for s in found.values()],
                "schedule": states,
            }
        )
        return
    for s in found.values():
        typer.echo(f"{s.name:<20} S{s.severity}  {s.title}")
    for st in states:
        state = "OVERDUE" if st["overdue"] else ("due" if st["due"] else "done")
        typer.echo(
            f"schedule {st['name']:<10} {words(st['duration']):<7} {st['period']:<8} {state}"
        )


@drill_app.command("runs")
def runs(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many.")] = 20,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Drills run so far, newest first, with their results."""
    rows, cfg = _run(config, lambda conn, cfg, now: service.list_drills(conn, limit))
    if as_json:
        print_json(rows)
        return
    for d in rows:
        m = d["measures"]
        figures = f" {m['met']}/{m['counted']} targets met" if m else ""
        typer.echo(
            f"#{d['id']:<4} {_local(d['started_at'], cfg)}  {d['scenario']:<20} "
            f"S{d['severity']} {d['kind']:<9} {d['result'] or d['status']}{figures}"
        )


@drill_app.command("end")
def end(
    drill_id: Annotated[int, typer.Argument(min=1, help="The drill's number.")],
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """End a drill: resolve its incident if still open, and measure it."""
    drill, cfg = _run(
        config, lambda conn, cfg, now: service.end(conn, cfg, drill_id, _actor(actor), now)
    )
    if as_json:
        print_json(drill)
        return
    typer.echo(report.markdown(drill, _title(drill["scenario"]), cfg.zone))


@drill_app.command("report")
def show_report(
    drill_id: Annotated[int, typer.Argument(min=1, help="The drill's number.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="md or html.")] = "md",
    config: ConfigOption = None,
) -> None:
    """The drill's report: each figure against its target, what went well, what missed."""
    if fmt not in ("md", "html"):
        fail("--format must be md or html", 2)
    drill, cfg = _run(config, lambda conn, cfg, now: service.require(conn, drill_id))
    title = _title(drill["scenario"])
    if fmt == "html":
        typer.echo(report.html(drill, title, cfg.zone), nl=False)
    else:
        typer.echo(report.markdown(drill, title, cfg.zone))
