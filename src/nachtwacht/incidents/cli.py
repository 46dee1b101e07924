"""`nachtwacht incident ...`: the incident doors of the CLI, working straight on the store.

Notifications these commands cause are queued in the outbox; a running `nachtwacht serve`
sends them within a second.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy import Connection

from nachtwacht.alerts.maintenance import alert_muted_by
from nachtwacht.checklist.gate import resolution_gate
from nachtwacht.cli.common import ConfigOption, JsonOption, fail, print_json, settings
from nachtwacht.cli.common import cli_actor as _actor
from nachtwacht.cli.common import open_store as _store
from nachtwacht.clock import SystemClock
from nachtwacht.config.schema import Settings
from nachtwacht.incidents import escalation, serialise, service
from nachtwacht.incidents.models import OPEN_STATUSES, response_label

incident_app = typer.Typer(help="Declare, follow and resolve incidents.", no_args_is_help=True)
T = TypeVar("T")

ActorOption = Annotated[
    str | None, typer.Option("--actor", help="Who is doing this (default: $USER).")
]


def _run(
    config: str | None, work: Callable[[Connection, Settings, float], T]
) -> tuple[T, Settings]:
    """`work` in one transaction, committed before the caller prints what it returns.

    Printing inside would let a closed stdout (`| head`) roll the change back.
    """
    cfg = settings(config)
    with _store(cfg) as store, store.begin() as conn:
        return work(conn, cfg, SystemClock().now()), cfg


def _print_detail(data: dict[str, Any], cfg: Settings) -> None:
    typer.echo(f"#{data['id']} S{data['severity']} {data['status'].upper()}  {data['title']}")
    typer.echo(f"  component {data['component'] or '-'} · commander {data['commander'] or '-'}")
    typer.echo(
        f"  detected {_local(data['detected_at'], cfg)} · respond by "
        f"{_local(data['response_due_at'], cfg)} ({data['response_target']})"
    )
    if data.get("acknowledged_at"):
        typer.echo(
            f"  acknowledged {_local(data['acknowledged_at'], cfg)} by {data['acknowledged_by']}"
        )
    if data.get("breached_at"):
        typer.echo(f"  response target BREACHED at {_local(data['breached_at'], cfg)}")
    for event in data.get("timeline", []):
        typer.echo(
            f"  {_local(event['time'], cfg)}  {event['kind']:<20} {event['actor']:<12} "
            f"{event['message']}"
        )


def _local(value: str | None, cfg: Settings) -> str:
    if not value:
        return "-"
    dt = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(cfg.zone)
    return dt.strftime("%Y-%m-%d %H:%M:%S")


def _show(data: dict[str, Any], cfg: Settings, as_json: bool) -> None:
    if as_json:
        print_json(data)
    else:
        _print_detail(data, cfg)


@incident_app.command("declare")
def declare(
    title: Annotated[str, typer.Option("--title", help="What is wrong, in one line.")],
    severity: Annotated[int, typer.Option("--severity", "-s", min=1, max=3, help="1, 2 or 3.")],
    component: Annotated[str | None, typer.Option(help="The affected component.")] = None,
    impact: Annotated[str | None, typer.Option(help="The business impact.")] = None,
    commander: Annotated[str | None, typer.Option(help="Contact id of the commander.")] = None,
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Declare an incident by hand; paging starts as the escalation policy says."""

    def work(conn: Connection, cfg: Settings, now: float) -> dict[str, Any]:
        if commander and cfg.people.contacts and cfg.people.contact(commander) is None:
            fail(f"no contact '{commander}'; see `nachtwacht oncall`", 2)
        incident_id = service.open_incident(
            conn,
            cfg,
            title=title,
            severity=severity,
            now=now,
            component=component,
            origin="declared",
            impact=impact,
            actor=_actor(actor),
            commander=commander,
        )
        escalation.advance(conn, cfg, incident_id, now, alert_muted_by)
        return serialise.detail(conn, cfg, incident_id, now)

    _show(*_run(config, work), as_json)


@incident_app.command("list")
def list_incidents(
    all_: Annotated[bool, typer.Option("--all", help="Include resolved and closed.")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Open incidents (or all with --all), newest first."""

    def work(conn: Connection, _cfg: Settings, now: float) -> list[dict[str, Any]]:
        rows = service.list_incidents(conn, None if all_ else OPEN_STATUSES)
        return [serialise.summary(r, now) for r in rows]

    data, cfg = _run(config, work)
    if as_json:
        print_json(data)
        return
    if not data:
        typer.echo("no open incidents")
    for d in data:
        ack = response_label(
            d["acknowledged_at"] is not None, d["response_overdue"], d["status"] in OPEN_STATUSES
        )
        typer.echo(
            f"#{d['id']:<5} S{d['severity']} {d['status']:<13} {ack:<8} "
            f"{_local(d['detected_at'], cfg)}  {d['title']}"
        )


@incident_app.command("show")
def show(
    incident_id: Annotated[int, typer.Argument(help="Incident number.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """An incident with its roles, alerts and whole timeline."""
    _show(
        *_run(config, lambda conn, cfg, now: serialise.detail(conn, cfg, incident_id, now)), as_json
    )


def _simple(
    incident_id: int,
    config: str | None,
    as_json: bool,
    fn: Callable[[Connection, Settings, float], Any],
    unless: str | None = None,
) -> None:
    """Do `fn` and show the incident. With `unless` (acknowledge | resolve): when that was
    already done, say by whom and when, do nothing, and still exit 0."""

    def work(conn: Connection, cfg: Settings, now: float) -> dict[str, Any]:
        note = None
        if unless is not None:
            inc = service.require(conn, incident_id)
            note = service.already_done(conn, inc, unless, cfg.zone, now)
        if note is None:
            fn(conn, cfg, now)
        out = serialise.detail(conn, cfg, incident_id, now)
        return out | {"already": note} if note else out

    data, cfg = _run(config, work)
    if data.get("already") and not as_json:
        typer.echo(f"{data['already']}; nothing to do")
    _show(data, cfg, as_json)


@incident_app.command("ack")
def ack(
    incident_id: int,
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Acknowledge: stops the repeating pages (already acknowledged: says by whom, exit 0)."""
    _simple(
        incident_id,
        config,
        as_json,
        lambda conn, cfg, now: service.acknowledge(conn, incident_id, _actor(actor), now),
        unless="acknowledge",
    )


@incident_app.command("update")
def update(
    incident_id: int,
    message: Annotated[
        str, typer.Option("--message", "-m", help="Progress, for everyone notified.")
    ],
    status: Annotated[
        str | None, typer.Option(help="investigating, mitigating, monitoring or resolved.")
    ] = None,
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Post a status update (sent to everyone notified so far; resets the update clock)."""
    if status is not None and status not in (
        "investigating",
        "mitigating",
        "monitoring",
        "resolved",
    ):
        fail("--status must be investigating, mitigating, monitoring or resolved", 2)
    _simple(
        incident_id,
        config,
        as_json,
        lambda conn, cfg, now: escalation.post_update(
            conn, cfg, incident_id, _actor(actor), now, message, status, gate=resolution_gate
        ),
    )


@incident_app.command("severity")
def severity(
    incident_id: int,
    level: Annotated[int, typer.Argument(min=1, max=3, help="1, 2 or 3.")],
    reason: Annotated[str, typer.Option("--reason", "--message", "-m", help="Why.")] = "",
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change the severity (recorded on the timeline; the response target follows)."""
    _simple(
        incident_id,
        config,
        as_json,
        lambda conn, cfg, now: service.set_severity(
            conn, cfg, incident_id, level, _actor(actor), now, reason
        ),
    )


@incident_app.command("assign")
def assign(
    incident_id: int,
    contact: Annotated[str, typer.Argument(help="Contact id.")],
    role: Annotated[str, typer.Option(help="commander or responder.")] = "responder",
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make a contact the incident commander or a responder."""
    if role not in ("commander", "responder"):
        fail("--role must be commander or responder", 2)

    def fn(conn: Connection, cfg: Settings, now: float) -> None:
        service.require(conn, incident_id)
        if cfg.people.contacts and cfg.people.contact(contact) is None:
            fail(f"no contact '{contact}'; see `nachtwacht oncall`", 2)
        service.assign(conn, incident_id, contact, role, _actor(actor), now)

    _simple(incident_id, config, as_json, fn)


@incident_app.command("escalate")
def escalate(
    incident_id: int,
    reason: Annotated[
        str,
        typer.Option("--reason", "-r", "--message", "-m", help="Why, e.g. restart failed 3 times."),
    ],
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fire the next escalation step now (restart failed, corruption, data loss, > 30 min)."""
    _simple(
        incident_id,
        config,
        as_json,
        lambda conn, cfg, now: escalation.escalate_now(
            conn, cfg, incident_id, _actor(actor), now, reason
        ),
    )


@incident_app.command("note")
def note(
    incident_id: int,
    text: Annotated[
        str | None,
        typer.Argument(
            help="The note, as -m gives it (kept for existing scripts).", show_default=False
        ),
    ] = None,
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="What happened or was done.")
    ] = None,
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a note to the timeline: `incident note ID -m TEXT` (or `incident note ID TEXT`)."""
    if text is not None and message is not None:
        fail("give the note once: -m TEXT or TEXT, not both", 2)
    said = message if message is not None else text
    if not said:
        fail("a note needs its text: nachtwacht incident note ID -m TEXT", 2)
    _simple(
        incident_id,
        config,
        as_json,
        lambda conn, cfg, now: service.add_note(conn, incident_id, _actor(actor), now, said),
    )


@incident_app.command("resolve")
def resolve(
    incident_id: int,
    message: Annotated[str, typer.Option("--message", "-m", help="How it was resolved.")] = "",
    skip_checklist: Annotated[
        str | None,
        typer.Option(
            "--skip-checklist",
            help="S1/S2: why the restoration checklist (`nachtwacht verify`) is skipped.",
        ),
    ] = None,
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Resolve (a resolved notice goes to everyone who was paged).

    S1 and S2 incidents need a passing `nachtwacht verify --incident ID` since they were
    acknowledged, or --skip-checklist with a reason (recorded on the timeline). An incident
    that is already resolved (it may have resolved itself) is said so, with exit 0.
    """
    _simple(
        incident_id,
        config,
        as_json,
        lambda conn, cfg, now: escalation.resolve(
            conn,
            cfg,
            incident_id,
            _actor(actor),
            now,
            message,
            gate=resolution_gate,
            skip_checklist=skip_checklist,
        ),
        unless="resolve",
    )


@incident_app.command("close")
def close(
    incident_id: int,
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Close a resolved incident (after the review)."""
    _simple(
        incident_id,
        config,
        as_json,
        lambda conn, cfg, now: service.set_status(conn, incident_id, "closed", _actor(actor), now),
    )
