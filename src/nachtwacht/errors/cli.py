"""The `nachtwacht errors / project` commands.

They work on the store directly, like the other commands; changes are audited with the actor
`cli:<login name>`. A project added here is accepted by a running server from its first event
(an unknown key makes the server reload its keys before it answers).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy import Connection

from nachtwacht.cli.common import ConfigOption, JsonOption, fail, print_json, settings
from nachtwacht.clock import SystemClock
from nachtwacht.config.schema import Settings
from nachtwacht.errors import issues, projects
from nachtwacht.store.db import Store, StoreError

errors_app = typer.Typer(help="Error issues: list, show, resolve, ignore.", no_args_is_help=True)
project_app = typer.Typer(help="Projects that report errors, and their DSNs.", no_args_is_help=True)
T = TypeVar("T")
SPARK = " ▁▂▃▄▅▆▇█"


def _actor() -> str:
    try:
        name = os.environ.get("USER") or getpass.getuser()
    except OSError:
        name = "unknown"
    return f"cli:{name}"


def _run(config: str | None, work: Callable[[Connection, Settings, float], T]) -> T:
    cfg = settings(config)
    store = Store(cfg.store.url)
    try:
        store.migrate()
        with store.begin() as conn:
            return work(conn, cfg, SystemClock().now())
    except StoreError as exc:
        fail(f"cannot use the store: {exc}", 2)
    finally:
        store.dispose()


def _local(value: str | None, cfg: Settings) -> str:
    if not value:
        return "-"
    dt = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(cfg.zone)
    return dt.strftime("%Y-%m-%d %H:%M")


def spark(counts: list[int]) -> str:
    top = max(counts, default=0)
    if top <= 0:
        return SPARK[0] * len(counts)
    return "".join(SPARK[0 if c == 0 else max(1, round(c / top * 8))] for c in counts)


# -- projects --------------------------------------------------------------------------------


@project_app.command("add")
def project_add(
    name: Annotated[str, typer.Argument(help="The application's name, e.g. erp.")],
    environment: Annotated[
        str | None, typer.Option(help="Environment of events that name none.")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a project and print its DSN (set it as the Sentry SDK's dsn)."""

    def work(conn: Connection, cfg: Settings, now: float) -> dict[str, Any]:
        return projects.add_project(
            conn,
            name,
            now,
            actor=_actor(),
            base=projects.base_url(cfg),
            environment=environment,
        )

    made = _run(config, work)
    if as_json:
        print_json(made)
        return
    typer.echo(made["dsn"])


@project_app.command("list")
def project_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Projects with their id, DSN and how many events they reported."""
    rows = _run(config, lambda conn, cfg, now: projects.list_projects(conn, projects.base_url(cfg)))
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no projects; add one with `nachtwacht project add NAME`")
    for r in rows:
        state = " (disabled)" if r["disabled"] else ""
        typer.echo(f"{r['name']:<20} id {r['id']:<4} {r['events']:>9} events  {r['dsn']}{state}")


@project_app.command("remove")
def project_remove(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
    config: ConfigOption = None,
) -> None:
    """Remove a project with all its issues and events (its DSN stops working)."""
    if not yes:
        typer.confirm(f"remove project '{name}' with all its issues and events?", abort=True)
    gone = _run(
        config, lambda conn, cfg, now: projects.remove_project(conn, name, now, actor=_actor())
    )
    typer.echo(f"removed project '{name}' ({gone['issues']} issues, {gone['events']} events)")


# -- issues ----------------------------------------------------------------------------------


@errors_app.command("list")
def errors_list(
    status: Annotated[
        str, typer.Option(help="unresolved, resolved, ignored or all.")
    ] = "unresolved",
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    query: Annotated[str | None, typer.Option("--query", "-q", help="Text in the title.")] = None,
    sort: Annotated[str, typer.Option(help="last_seen, count or first_seen.")] = "last_seen",
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 50,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Issues with their count, last seen and a 24 h trend."""

    def work(conn: Connection, cfg: Settings, now: float) -> tuple[list[dict[str, Any]], int]:
        rows, total = issues.list_issues(
            conn, status=status, project=project, text=query, sort=sort, limit=limit
        )
        counts = issues.hourly(conn, [r["id"] for r in rows], now, 24)
        return [{**r, "hours_24h": counts[r["id"]]} for r in rows], total

    cfg = settings(config)
    rows, total = _run(config, lambda conn, _cfg, now: work(conn, _cfg, now))
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no issues match")
    else:
        typer.echo(
            f"{'ID':<6} {'STATUS':<10} {'EVENTS':>7}  {'LAST SEEN':<16}  {'LAST 24 H':<24}  "
            "[PROJECT] TITLE"
        )
    for r in rows:
        typer.echo(
            f"#{r['id']:<5} {_list_status(r):<10} {r['count']:>7}  "
            f"{_local(r['last_seen'], cfg):<16}  {spark(r['hours_24h'])}  "
            f"[{r['project']}] {r['title'][:90]}"
        )
    if total > len(rows):
        typer.echo(f"({len(rows)} of {total}; --limit shows more)")


def _list_status(row: dict[str, Any]) -> str:
    """The status, or "regressed" for an unresolved issue that was resolved and seen again."""
    if row["status"] == "unresolved" and row.get("regressed_at"):
        return "regressed"
    return str(row["status"])


def _print_issue(d: dict[str, Any], cfg: Settings) -> None:
    typer.echo(f"#{d['id']} {d['status'].upper()}  {d['title']}")
    typer.echo(
        f"  project {d['project']} · {d['level']} · {d['category']} · {d['count']} events · "
        f"culprit {d['culprit'] or '-'}"
    )
    typer.echo(
        f"  first seen {_local(d['first_seen'], cfg)} · last seen {_local(d['last_seen'], cfg)}"
        + (f" · regressed {_local(d['regressed_at'], cfg)}" if d["regressed_at"] else "")
        + (f" · resolved by {d['resolved_by']}" if d["status"] == "resolved" else "")
    )
    typer.echo(f"  last 24 h {spark(d['hours_24h'])}  last 14 d {spark(d['days_14d'])}")
    event = d.get("latest_event")
    if not event:
        typer.echo("  (no stored event: they are past the retention)")
        return
    typer.echo(
        f"latest event {event['event_id']} at {_local(event['ts'], cfg)}"
        f" · env {event['environment'] or '-'} · release {event['release'] or '-'}"
    )
    if event["tags"]:
        typer.echo("  tags " + ", ".join(f"{k}={v}" for k, v in event["tags"].items()))
    for exc in event["exceptions"]:
        typer.echo(f"{exc['type']}: {exc['value']}")
        for f in exc["frames"]:
            mark = "*" if f["in_app"] else " "
            where = f["filename"] or f["module"] or "?"
            typer.echo(f" {mark} {where}:{f['lineno'] or '?'} in {f['function'] or '?'}")
            if f["context_line"]:
                typer.echo(f"      {f['context_line'].strip()}")
    if not event["exceptions"] and event["message"]:
        typer.echo(event["message"])


@errors_app.command("show")
def errors_show(
    issue_id: Annotated[int, typer.Argument(help="Issue number.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """An issue with its latest event and stack trace (in-app frames marked *)."""
    cfg = settings(config)
    data = _run(config, lambda conn, _cfg, now: issues.detail(conn, issue_id, now))
    if as_json:
        print_json(data)
    else:
        _print_issue(data, cfg)


def _change(issue_id: int, action: str, config: str | None) -> None:
    done = _run(
        config, lambda conn, cfg, now: issues.set_status(conn, issue_id, action, _actor(), now)
    )
    typer.echo(f"#{issue_id} {done['status']}: {done['title']}")


@errors_app.command("resolve")
def errors_resolve(issue_id: int, config: ConfigOption = None) -> None:
    """Resolve an issue; an event after this reopens it (a regression)."""
    _change(issue_id, "resolve", config)


@errors_app.command("ignore")
def errors_ignore(issue_id: int, config: ConfigOption = None) -> None:
    """Ignore an issue: its events are still counted, it stays ignored."""
    _change(issue_id, "ignore", config)


@errors_app.command("unresolve")
def errors_unresolve(issue_id: int, config: ConfigOption = None) -> None:
    """Set a resolved or ignored issue back to unresolved."""
    _change(issue_id, "unresolve", config)
