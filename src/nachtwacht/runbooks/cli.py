"""The `nachtwacht runbook` commands: list, show, run, resume, runs, log.

The CLI works straight on the store with the authority of whoever can read the config (which
holds the store's credentials), so it acts with the admin role. Confirmation is still asked:
in a terminal each destructive step and each manual step is a question; `--yes` answers yes
to all of them; without a terminal and without `--yes`, destructive steps are refused and a
manual step pauses the run (resume it with `nachtwacht runbook resume RUN`).

Exit codes: 0 the run completed with no failed step (or was a dry run), 1 it failed, some of
its steps failed (`partly_failed`), it escalated or was refused,
2 bad input, 3 it is waiting for a person.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, Any

import typer

from nachtwacht.cli.common import (
    ConfigOption,
    JsonOption,
    fail,
    keep_going,
    print_json,
    settings,
)
from nachtwacht.cli.common import cli_actor as _actor
from nachtwacht.cli.common import open_store as _store
from nachtwacht.clock import SystemClock
from nachtwacht.runbooks import service
from nachtwacht.runbooks.runner import Action, Policy, Runner, Who
from nachtwacht.store.db import Store

runbook_app = typer.Typer(help="Runbooks: list, show, run.", no_args_is_help=True)

ActorOption = Annotated[
    str | None, typer.Option("--actor", help="Who is doing this (default: $USER).")
]
EXIT = {"succeeded": 0, "planned": 0, "waiting": 3, "running": 1}
MARK = {
    "ok": "[ok]     ",
    "failed": "[FAILED] ",
    "skipped": "[skip]   ",
    "refused": "[REFUSED]",
    "waiting": "[wait]   ",
    "planned": "[plan]   ",
}


def _vars(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        name, eq, value = pair.partition("=")
        if not eq or not name:
            fail(f"--var takes NAME=VALUE, not '{pair}'", 2)
        out[name.strip()] = value
    return out


@runbook_app.command("list")
def list_runbooks(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Built-in and user runbooks, with the variant their steps are for."""
    cfg = settings(config)
    rows, problems = service.catalog(cfg)
    if as_json:
        print_json({"runbooks": rows, "problems": problems})
    else:
        for r in rows:
            where = "built-in" if r["source"] == "builtin" else r["source"]
            typer.echo(
                f"{r['name']:<22} {r['steps']:>2} steps ({r['destructive_steps']} destructive)  "
                f"{r['title']}  [{where}]"
            )
        for p in problems:
            typer.echo(f"error: {p}", err=True)
    if problems:
        raise typer.Exit(2)


@runbook_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Runbook name.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """A runbook's steps as they would run on this host (variables in, secrets masked)."""
    cfg = settings(config)
    data = service.detail(cfg, name)
    if as_json:
        print_json(data)
        return
    typer.echo(f"{data['name']}: {data['title']}  ({data['variant']}, {data['source']})")
    if data["protocol"]:
        typer.echo(f"protocol: {data['protocol']}")
    if data["description"]:
        typer.echo(data["description"])
    for name_, spec in data["inputs"].items():
        default = "required" if spec["default"] is None else f"default '{spec['default']}'"
        typer.echo(f"input {name_} ({spec['type']}): {spec['description']} ({default})")
    for s in data["steps"]:
        flags = [s["kind"]]
        if s["destructive"]:
            flags.append("DESTRUCTIVE")
        if s["retries"]:
            flags.append(f"{s['retries'] + 1} attempts")
        if s["on_failure"] != "stop":
            flags.append(f"on failure: {s['on_failure']}")
        if s["if_var"]:
            flags.append(f"if {s['if_var']}")
        if s["only_if_failed"]:
            flags.append(f"only if {s['only_if_failed']} failed")
        typer.echo(f"\n{s['number']:>2}. {s['title']}  [{', '.join(flags)}]")
        for line in s["does"].splitlines():
            typer.echo(f"    {line}")


def _print_step(step: dict[str, Any]) -> None:
    mark = MARK.get(step["status"], step["status"])
    tries = f", {step['attempts']} attempts" if (step.get("attempts") or 0) > 1 else ""
    code = f", exit {step['exit_code']}" if step.get("exit_code") not in (None, 0) else ""
    by = f", confirmed by {step['confirmed_by']}" if step.get("confirmed_by") else ""
    typer.echo(f"{mark} {step['idx'] + 1}. {step['name']} ({step['kind']}{tries}{code}{by})")
    for line in (step.get("output") or "").splitlines():
        typer.echo(f"           {line}")


def _finish(store: Store, run_id: int, as_json: bool) -> None:
    with store.connect() as conn:
        view = service.run_view(conn, run_id)
    if as_json:
        print_json(view)
    else:
        if view["dry_run"]:
            for s in view["steps"]:
                _print_step({**s, "idx": s["number"] - 1, "name": s["id"]})
        typer.echo(f"\nrun #{run_id} of {view['runbook']}: {view['status']} — {view['summary']}")
        if view["status"] == "waiting":
            typer.echo(
                f"resume it with `nachtwacht runbook resume {run_id}` "
                "(--skip to skip the step, --yes to confirm what follows)"
            )
    raise typer.Exit(EXIT.get(view["status"], 1))


def _policy(yes: bool, as_json: bool) -> Policy:
    # printed between steps: a reader that goes away (`| head`) must not stop the run
    progress = None if as_json else keep_going(_print_step)
    if yes:
        return Policy(destructive="yes", manual="yes", progress=progress)
    if sys.stdin.isatty() and not as_json:
        ask = lambda question: typer.confirm(question, default=False)  # noqa: E731
        return Policy(destructive="ask", manual="ask", ask=ask, progress=progress)
    return Policy(destructive="no", manual="pause", progress=progress)


@runbook_app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="Runbook name (see `nachtwacht runbook list`).")],
    incident: Annotated[
        int | None, typer.Option("--incident", "-i", min=1, help="Record on this incident.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would run; run nothing.")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Confirm every destructive and manual step.")
    ] = False,
    var: Annotated[
        list[str] | None, typer.Option("--var", help="An input as NAME=VALUE (repeatable).")
    ] = None,
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run a runbook now; each step is recorded (and put on the incident's timeline)."""
    cfg = settings(config)
    inputs = _vars(var)
    policy = _policy(yes, as_json)
    with _store(cfg) as store:
        runner = Runner(store, cfg, SystemClock())
        run_id = asyncio.run(
            runner.start(
                name,
                who=Who(_actor(actor), "admin"),
                incident_id=incident,
                inputs=inputs,
                dry_run=dry_run,
                policy=policy,
            )
        )
        _finish(store, run_id, as_json)


@runbook_app.command("resume")
def resume(
    run_id: Annotated[int, typer.Argument(min=1, help="The waiting run.")],
    skip: Annotated[bool, typer.Option("--skip", help="Skip the waiting step.")] = False,
    refuse: Annotated[
        bool, typer.Option("--refuse", help="Refuse the waiting step (ends the run).")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Confirm the destructive and manual steps after it.")
    ] = False,
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Confirm the step a run waits at (a manual step done, a destructive step to run) and go on."""
    if skip and refuse:
        fail("--skip and --refuse exclude each other", 2)
    cfg = settings(config)
    policy = _policy(yes, as_json)
    action: Action = "skip" if skip else ("refuse" if refuse else "run")
    with _store(cfg) as store:
        runner = Runner(store, cfg, SystemClock())
        asyncio.run(
            runner.resume(run_id, who=Who(_actor(actor), "admin"), action=action, policy=policy)
        )
        _finish(store, run_id, as_json)


@runbook_app.command("runs")
def runs(
    incident: Annotated[int | None, typer.Option("--incident", "-i", min=1)] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recent runs, newest first."""
    cfg = settings(config)
    with _store(cfg) as store, store.connect() as conn:
        rows = service.list_runs(conn, incident, None, limit)
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no runs yet")
    for r in rows:
        inc = f" incident #{r['incident_id']}" if r["incident_id"] else ""
        typer.echo(
            f"#{r['id']:<5} {r['runbook']:<22} {r['status']:<10} {r['started_at']} "
            f"by {r['started_by']}{inc}  {r['summary'] or ''}"
        )


@runbook_app.command("log")
def log(
    run_id: Annotated[int, typer.Argument(min=1)],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """One run with every step's start, end, attempts, exit code, output and confirmer."""
    cfg = settings(config)
    with _store(cfg) as store, store.connect() as conn:
        view = service.run_view(conn, run_id)
    if as_json:
        print_json(view)
        return
    typer.echo(
        f"run #{view['id']} of {view['runbook']}: {view['status']} — {view['summary'] or ''}\n"
        f"started {view['started_at']} by {view['started_by']}"
        + (f", incident #{view['incident_id']}" if view["incident_id"] else "")
    )
    for s in view["steps"]:
        _print_step({**s, "idx": s["number"] - 1, "name": s["id"]})
        typer.echo(f"           {s['started_at']} → {s['finished_at'] or '…'}")
