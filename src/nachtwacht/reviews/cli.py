"""The `nachtwacht report / followup / postmortem` commands."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy import Connection

from nachtwacht.cli.common import ConfigOption, JsonOption, fail, print_json, settings
from nachtwacht.cli.common import cli_actor as _actor
from nachtwacht.cli.common import open_store as _store
from nachtwacht.clock import SystemClock
from nachtwacht.config.schema import Settings
from nachtwacht.reviews import document, followups, monthly, postmortem, service

report_app = typer.Typer(help="Post-incident and monthly reports.", no_args_is_help=True)
followup_app = typer.Typer(help="Improvement actions from reviews.", no_args_is_help=True)
postmortem_app = typer.Typer(help="Fill in a post-incident review.", no_args_is_help=True)
T = TypeVar("T")

ActorOption = Annotated[
    str | None, typer.Option("--actor", help="Who is doing this (default: $USER).")
]


def _run(config: str | None, work: Callable[[Connection, Settings, float], T]) -> T:
    cfg = settings(config)
    with _store(cfg) as store, store.begin() as conn:
        return work(conn, cfg, SystemClock().now())


def _write(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text, nl=not text.endswith("\n"))
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}", 1)
    typer.echo(f"wrote {output}", err=True)


# -- report ------------------------------------------------------------------------------------


@report_app.command("postmortem")
def report_postmortem(
    incident_id: Annotated[int, typer.Argument(min=1, help="Incident number.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="md, html or json.")] = "md",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """The post-incident review: timeline, TTD/TTA/TTM/TTR, SLA, downtime, notifications,
    responders, runbooks, evidence, checklist, root cause analysis and improvement actions."""
    if fmt not in ("md", "html", "json"):
        fail("--format must be md, html or json", 2)

    def work(conn: Connection, cfg: Settings, now: float) -> str:
        review = postmortem.build(conn, cfg, incident_id, now)
        if fmt == "html":
            return document.html(review, cfg)
        if fmt == "json":
            return json.dumps(postmortem.as_json(review), indent=2, default=str) + "\n"
        return document.markdown(review, cfg)

    _write(_run(config, work), output)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.2f} %"


@report_app.command("monthly")
def report_monthly(
    month: Annotated[
        str | None, typer.Option(help="YYYY-MM in site time (default: this month).")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Incidents by severity, MTTA, MTTR, SLA compliance, uptime per component, top error
    issues and open follow-ups for one month."""

    def work(conn: Connection, cfg: Settings, now: float) -> dict[str, Any]:
        return postmortem.as_json(monthly.report(conn, cfg, month, now))

    data = _run(config, work)
    if as_json:
        print_json(data)
        return
    span = document.span
    inc = data["incidents"]
    typer.echo(f"{data['site']} · {data['month']} ({data['timezone']})")
    typer.echo(
        f"incidents {inc['count']}: "
        + ", ".join(f"S{s} {data['by_severity'][s]['count']}" for s in ("1", "2", "3"))
    )
    typer.echo(f"mean time to acknowledge {span(inc['mtta'])} over {inc['acknowledged']}")
    typer.echo(f"mean time to resolve     {span(inc['mttr'])} over {inc['resolved']}")
    typer.echo(
        f"SLA compliance {_pct(inc['sla_compliance'])} ({inc['sla_met']} of {inc['sla_decided']})"
    )
    typer.echo("uptime per component:")
    for u in data["uptime"]:
        typer.echo(f"  {u['component']:<24} {_pct(u['uptime']):>9}  ({u['probes']} probes)")
    typer.echo("top error issues:" if data["top_issues"] else "top error issues: none")
    for issue in data["top_issues"]:
        typer.echo(f"  #{issue['id']:<6} {issue['events']:>7} events  {issue['title']}")
    typer.echo(f"open follow-ups: {len(data['open_followups'])}")
    for f in data["open_followups"]:
        late = " OVERDUE" if f["overdue"] else ""
        typer.echo(f"  #{f['id']:<5} {f['owner']:<12} due {f['due_at']}{late}  {f['title']}")
    typer.echo(monthly.restore_line(data["restore_tests"]))


# -- postmortem --------------------------------------------------------------------------------


@postmortem_app.command("set")
def postmortem_set(
    incident_id: Annotated[int, typer.Argument(min=1, help="Incident number.")],
    root_cause: Annotated[
        str | None, typer.Option("--root-cause", help="The primary cause.")
    ] = None,
    contributing: Annotated[
        str | None, typer.Option("--contributing-factors", help="What made it worse or likelier.")
    ] = None,
    impact: Annotated[str | None, typer.Option(help="Downtime, data loss, users affected.")] = None,
    lessons: Annotated[str | None, typer.Option(help="What the review meeting learned.")] = None,
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fill in the review's fields ("" clears one); recorded on the incident's timeline."""
    values = {
        "root_cause": root_cause,
        "contributing_factors": contributing,
        "impact": impact,
        "lessons": lessons,
    }
    fields = _run(
        config,
        lambda conn, cfg, now: service.set_fields(conn, incident_id, values, _actor(actor), now),
    )
    if as_json:
        print_json(postmortem.as_json(fields))
        return
    for key in service.FIELDS:
        typer.echo(f"{service.LABELS[key]:<21} {fields[key] or '—'}")


# -- follow-ups --------------------------------------------------------------------------------


def _print_followups(rows: list[dict[str, Any]]) -> None:
    if not rows:
        typer.echo("no follow-ups")
    for f in rows:
        state = "OVERDUE" if f["overdue"] else f["status"]
        typer.echo(
            f"#{f['id']:<5} incident #{f['incident_id']:<5} {f['owner']:<12} due {f['due_at']}  "
            f"{state:<8} {f['title']}"
        )


@followup_app.command("add")
def followup_add(
    incident_id: Annotated[int, typer.Argument(min=1, help="Incident number.")],
    title: Annotated[str, typer.Option("--title", "-t", help="What is to be done.")],
    owner: Annotated[str, typer.Option("--owner", help="Contact id of who does it.")],
    due: Annotated[
        str, typer.Option("--due", help="YYYY-MM-DD, YYYY-MM-DDTHH:MM, or a duration like 7d.")
    ],
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add an improvement action; its owner is reminded when it is due and still open."""

    def work(conn: Connection, cfg: Settings, now: float) -> dict[str, Any]:
        due_at = service.parse_due(due, now, cfg.zone, cfg.business_hours.start)
        return followups.add(
            conn,
            cfg,
            incident_id,
            title=title,
            owner=owner,
            due_at=due_at,
            actor=_actor(actor),
            now=now,
        )

    row = _run(config, work)
    if as_json:
        print_json(row)
    else:
        _print_followups([row])


@followup_app.command("list")
def followup_list(
    all_: Annotated[bool, typer.Option("--all", help="Include those done.")] = False,
    incident: Annotated[
        int | None, typer.Option("--incident", min=1, help="Only this incident.")
    ] = None,
    owner: Annotated[str | None, typer.Option(help="Only this owner.")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Open improvement actions (or all with --all), soonest due first."""
    rows = _run(
        config,
        lambda conn, cfg, now: followups.list_followups(
            conn, now, "all" if all_ else "open", incident, owner
        ),
    )
    if as_json:
        print_json(rows)
    else:
        _print_followups(rows)


@followup_app.command("done")
def followup_done(
    followup_id: Annotated[int, typer.Argument(min=1, help="Follow-up number.")],
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Mark an improvement action done (recorded on its incident's timeline)."""
    row = _run(
        config, lambda conn, cfg, now: followups.complete(conn, followup_id, _actor(actor), now)
    )
    if as_json:
        print_json(row)
    else:
        _print_followups([row])
