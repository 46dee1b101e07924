"""The `nachtwacht statuspage` commands: customer notices and subscribers.

The command line runs with the store's own credentials, as an admin does: its approval is
an admin's, recorded under `--actor` (default: the login name).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy import Connection

from nachtwacht.cli.common import ConfigOption, JsonOption, print_json, settings
from nachtwacht.cli.common import cli_actor as _actor
from nachtwacht.cli.common import open_store as _store
from nachtwacht.clock import SystemClock
from nachtwacht.config.schema import Settings
from nachtwacht.statuspage import notices, subscribers
from nachtwacht.statuspage.service import notice_view, public_url

statuspage_app = typer.Typer(
    help="The public status page: customer notices and subscribers.", no_args_is_help=True
)
notice_app = typer.Typer(
    help="Draft, edit, approve and list customer notices.", no_args_is_help=True
)
webhook_app = typer.Typer(help="Subscribers' webhooks (added by an admin).", no_args_is_help=True)
statuspage_app.add_typer(notice_app, name="notice")
statuspage_app.add_typer(webhook_app, name="webhook")
T = TypeVar("T")

ActorOption = Annotated[
    str | None, typer.Option("--actor", help="Who is doing this (default: $USER).")
]
TitleOption = Annotated[str | None, typer.Option("--title", help="The public title.")]
BodyOption = Annotated[str | None, typer.Option("--body", help="The public text.")]
StatusOption = Annotated[
    str | None,
    typer.Option("--status", help="investigating, identified, monitoring or resolved."),
]
ComponentsOption = Annotated[
    str | None, typer.Option("--components", help="Public component names, comma separated.")
]


def _run(config: str | None, work: Callable[[Connection, Settings, float], T]) -> T:
    cfg = settings(config)
    with _store(cfg) as store, store.begin() as conn:
        return work(conn, cfg, SystemClock().now())


def _names(value: str | None) -> list[str] | None:
    return None if value is None else [n.strip() for n in value.split(",") if n.strip()]


def _show(notice: dict[str, Any]) -> None:
    typer.echo(
        f"notice {notice['id']} ({notice['kind']}, {notice['state']}) of incident "
        f"{notice['incident_id']}: {notice['title']}"
    )
    typer.echo(
        f"status {notice['public_status']}; components: "
        f"{', '.join(notice['components']) or 'all services'}"
    )
    typer.echo("")
    typer.echo(notice["body"])


@notice_app.command("draft")
def notice_draft(
    incident_id: Annotated[int, typer.Argument(min=1, help="Incident number.")],
    kind: Annotated[
        str | None, typer.Option("--kind", help="notice, update or resolved (default: chosen).")
    ] = None,
    title: TitleOption = None,
    body: BodyOption = None,
    status: StatusOption = None,
    components: ComponentsOption = None,
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Draft a customer notice from the protocol's template; publish it with `approve`."""
    row = _run(
        config,
        lambda conn, cfg, now: notices.draft(
            conn,
            cfg,
            incident_id,
            _actor(actor),
            now,
            kind=kind,
            title=title,
            body=body,
            public_status=status,
            components=_names(components),
        ),
    )
    view = notice_view(row, internal=True)
    if as_json:
        print_json(view)
        return
    _show(view)
    typer.echo(f"\napprove it: nachtwacht statuspage notice approve {view['id']}")


@notice_app.command("edit")
def notice_edit(
    notice_id: Annotated[int, typer.Argument(min=1, help="Notice number.")],
    title: TitleOption = None,
    body: BodyOption = None,
    status: StatusOption = None,
    components: ComponentsOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change a draft's title, text, status or components."""
    row = _run(
        config,
        lambda conn, cfg, now: notices.edit(
            conn,
            cfg,
            notice_id,
            now,
            title=title,
            body=body,
            public_status=status,
            components=_names(components),
        ),
    )
    view = notice_view(row, internal=True)
    print_json(view) if as_json else _show(view)


@notice_app.command("approve")
def notice_approve(
    notice_id: Annotated[int, typer.Argument(min=1, help="Notice number.")],
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Publish a draft on the status page and queue it for the subscribers."""
    row, queued = _run(
        config,
        lambda conn, cfg, now: notices.approve(conn, cfg, notice_id, _actor(actor), "admin", now),
    )
    view = notice_view(row, internal=True)
    if as_json:
        print_json(view | {"queued": queued})
        return
    typer.echo(f"published notice {notice_id}: {view['title']}; {queued} subscriber message(s)")


@notice_app.command("discard")
def notice_discard(
    notice_id: Annotated[int, typer.Argument(min=1, help="Notice number.")],
    actor: ActorOption = None,
    config: ConfigOption = None,
) -> None:
    """Throw a draft away."""
    _run(config, lambda conn, cfg, now: notices.discard(conn, notice_id, _actor(actor), now))
    typer.echo(f"discarded notice {notice_id}")


@notice_app.command("list")
def notice_list(
    incident: Annotated[
        int | None, typer.Option("--incident", help="Only this incident's.")
    ] = None,
    state: Annotated[
        str | None, typer.Option("--state", help="draft, published or discarded.")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Notices, newest first."""
    rows = _run(config, lambda conn, cfg, now: notices.list_notices(conn, incident, state))
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no notices")
    for r in rows:
        typer.echo(
            f"#{r['id']:<5} {r['state']:<10} {r['kind']:<9} incident {r['incident_id']:<6} "
            f"{r['title']}"
        )


@statuspage_app.command("subscribers")
def subscriber_counts(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """How many subscribers there are, by kind and state, and where the page is."""
    cfg = settings(config)
    data = _run(config, lambda conn, cfg, now: subscribers.counts(conn))
    if as_json:
        print_json({"counts": data, "url": public_url(cfg)})
        return
    typer.echo(f"status page: {public_url(cfg)} ({'on' if cfg.status_page.enabled else 'off'})")
    for kind, states in data.items():
        text = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none"
        typer.echo(f"{kind:<8} {text}")


@webhook_app.command("add")
def webhook_add(
    url: Annotated[str, typer.Argument(help="The subscriber's URL; each notice is POSTed there.")],
    config: ConfigOption = None,
) -> None:
    """Add a subscriber's webhook."""
    row = _run(config, lambda conn, cfg, now: subscribers.add_webhook(conn, cfg, url, now))
    typer.echo(f"webhook subscriber {row['id']}: {row['address']}")


@webhook_app.command("remove")
def webhook_remove(
    subscriber_id: Annotated[int, typer.Argument(min=1, help="Subscriber number.")],
    config: ConfigOption = None,
) -> None:
    """Stop sending to a subscriber."""
    _run(config, lambda conn, cfg, now: subscribers.remove(conn, subscriber_id, now))
    typer.echo(f"removed subscriber {subscriber_id}")
