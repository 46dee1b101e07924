"""`nachtwacht oncall` and `nachtwacht override ...`: thin commands over oncall.service.

`oncall` answers from the config alone (with a warning) when the store cannot be read: at
3 a.m. with the database server down, who to call matters more than a run-time override.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy import Connection

from nachtwacht.cli.common import ConfigOption, JsonOption, fail, print_json, settings
from nachtwacht.cli.common import cli_actor as _actor
from nachtwacht.clock import SystemClock
from nachtwacht.config.schema import Settings
from nachtwacht.oncall import service
from nachtwacht.store.db import Store, StoreError

override_app = typer.Typer(
    help="Put someone else on call for a while: add, list and delete overrides.",
    no_args_is_help=True,
)
T = TypeVar("T")
TIME_HELP = "ISO 8601 or 'YYYY-MM-DD HH:MM' in the site timezone."


def _time(value: str, cfg: Settings, option: str) -> float:
    return service.parse_time(value, cfg.zone, option)


@contextmanager
def _store(cfg: Settings) -> Iterator[Store]:
    store = Store(cfg.store.url)
    try:
        store.migrate()
        yield store
    finally:
        store.dispose()


def _write(cfg: Settings, work: Callable[[Connection], T]) -> T:
    try:
        with _store(cfg) as store, store.begin() as conn:
            return work(conn)
    except StoreError as exc:
        fail(f"cannot use the store: {exc}", 2)


def _local(value: str | None, cfg: Settings) -> str:
    if not value:
        return "-"
    ts = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return service.local_text(ts, cfg.zone)


def _reach(person: dict[str, Any] | None) -> str:
    if person is None:
        return "nobody"
    ways = [w for w in (person["phone"], person["email"], person["chat"]) if w]
    return f"{person['name']} ({', '.join(ways)})" if ways else person["name"]


def oncall(
    ctx: typer.Context,
    config: ConfigOption = None,
    at: Annotated[
        str | None, typer.Option("--at", help=f"Ask about another moment; {TIME_HELP}")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Who is on call now (or --at a moment) and next, the protocol roles and external support."""
    if ctx.invoked_subcommand is not None:
        return
    cfg = settings(config)
    now = _time(at, cfg, "--at") if at else SystemClock().now()
    warning = None
    try:
        with _store(cfg) as store, store.connect() as conn:
            data = service.overview(conn, cfg, now)
    except StoreError as exc:
        warning = f"cannot read overrides from the store ({exc}); showing the config only"
        data = service.overview(None, cfg, now)
    if warning:
        typer.echo(f"warning: {warning}", err=True)
        data["warning"] = warning
    if as_json:
        print_json(data)
        return
    _print_overview(data, cfg)


def _print_overview(data: dict[str, Any], cfg: Settings) -> None:
    typer.echo(f"{data['site']}: on call at {_local(data['at'], cfg)} ({cfg.timezone})")
    if not data["rotations"]:
        typer.echo("\nno rotations configured; the on-call engineers are listed by role below")
    for rot in data["rotations"]:
        typer.echo(f"\nrotation {rot['name']} ({rot['type']}, handoff {rot['handoff']})")
        typer.echo(f"  now:   {_reach(rot['on_call'])}")
        override = rot["override"]
        if override:
            origin = (
                "from the config"
                if override["id"] is None
                else f"#{override['id']} by {override['created_by']}"
            )
            typer.echo(f"         (override {origin})")
        backup = rot["on_call"]["backup"] if rot["on_call"] else None
        if backup:
            typer.echo(f"         backup {backup['name']} ({backup['phone'] or 'no phone'})")
        typer.echo(f"  until: {_local(rot['until'], cfg)}")
        typer.echo(f"  next:  {_reach(rot['next'])}")
    typer.echo("\nroles")
    for role in data["roles"]:
        people = role["contacts"]
        names = ", ".join(f"{p['name']} ({p['phone'] or p['email'] or 'no phone'})" for p in people)
        typer.echo(f"  {role['title']:<20} {names or '-'}")
    typer.echo("\nexternal support")
    if not data["external"]:
        typer.echo("  none configured (people.external)")
    for ext in data["external"]:
        details = [
            f"emergency {ext['emergency_number']}" if ext["emergency_number"] else None,
            f"portal {ext['portal']}" if ext["portal"] else None,
            f"account {ext['account_id']}" if ext["account_id"] else None,
            f"contract {ext['contract_id']}" if ext["contract_id"] else None,
            ext["email"],
        ]
        typer.echo(
            f"  {ext['provider']} [{ext['kind']}]: {', '.join(d for d in details if d) or '-'}"
        )


@override_app.command("add")
def add(
    rotation: Annotated[str, typer.Argument(help="The rotation to override.")],
    contact: Annotated[str, typer.Argument(help="The contact id who takes over.")],
    until: Annotated[str, typer.Option("--until", help=f"When it ends; {TIME_HELP}")],
    start: Annotated[
        str | None, typer.Option("--from", help=f"When it starts (default now); {TIME_HELP}")
    ] = None,
    actor: Annotated[
        str | None, typer.Option("--actor", help="Who is doing this (default: $USER).")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Put CONTACT on call in ROTATION from --from until --until."""
    cfg = settings(config)
    now = SystemClock().now()
    starts_at = _time(start, cfg, "--from") if start else now
    ends_at = _time(until, cfg, "--until")

    def work(conn: Connection) -> dict[str, Any]:
        new_id = service.add_override(
            conn, cfg, rotation, contact, starts_at, ends_at, _actor(actor), now
        )
        return next(
            o for o in service.list_overrides(conn, cfg, now, rotation) if o["id"] == new_id
        )

    row = _write(cfg, work)
    if as_json:
        print_json(row)
        return
    typer.echo(
        f"override #{row['id']}: {row['name']} on call in {rotation} from "
        f"{_local(row['starts_at'], cfg)} until {_local(row['ends_at'], cfg)}"
    )


@override_app.command("list")
def list_(
    rotation: Annotated[str | None, typer.Argument(help="Only this rotation.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include ended overrides.")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Current and future overrides, from the config and from the store."""
    cfg = settings(config)
    rows = _write(
        cfg, lambda conn: service.list_overrides(conn, cfg, SystemClock().now(), rotation, all_)
    )
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no overrides")
    for r in rows:
        ident = f"#{r['id']}" if r["id"] is not None else "config"
        stale = "  (stale: rotation or contact no longer configured)" if r["stale"] else ""
        typer.echo(
            f"{ident:<8} {r['rotation']:<16} {r['name'] or r['contact']:<20} "
            f"{_local(r['starts_at'], cfg)} -> {_local(r['ends_at'], cfg)}  "
            f"by {r['created_by']}{stale}"
        )


@override_app.command("delete")
def delete(
    override_id: Annotated[int, typer.Argument(metavar="ID", help="The override's id.")],
    config: ConfigOption = None,
) -> None:
    """Delete an override added with `override add` (config overrides live in the config)."""
    cfg = settings(config)
    row = _write(cfg, lambda conn: service.delete_override(conn, override_id))
    typer.echo(f"deleted override #{override_id} ({row['contact']} in {row['rotation']})")


oncall_app = typer.Typer(
    help="Who is on call now and next; `oncall override` manages overrides.",
    invoke_without_command=True,
)
oncall_app.callback()(oncall)
oncall_app.add_typer(override_app, name="override")


# -- contacts: verification ------------------------------------------------------------------

contacts_app = typer.Typer(
    help="Contacts and whether their channels are verified: list, verify.", no_args_is_help=True
)
STATUS_WORDS = {
    "verified": "verified",
    "stale": "STALE",
    "pending": "link sent",
    "unverified": "UNVERIFIED",
}


def contacts_verify(
    config: ConfigOption = None,
    contact: Annotated[
        str | None, typer.Option("--contact", help="Only this contact id (default: all).")
    ] = None,
    channel: Annotated[
        str | None,
        typer.Option("--channel", help="Only this channel name or kind (email, sms, slack ...)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Send each contact a confirm link on every channel that reaches them (via the outbox)."""
    from nachtwacht.cli.common import open_store
    from nachtwacht.oncall import verify

    cfg = settings(config)
    now = SystemClock().now()
    verify.base_url(cfg)  # refused before the store is touched
    with open_store(cfg) as store, store.begin() as conn:
        sent = verify.send(conn, cfg, now, contact=contact, channel=channel)
    if as_json:
        print_json(sent)
        return
    for s in sent:
        typer.echo(f"{s['name']:<24} {s['channel']} ({s['kind']}) {s['address']}: link queued")
    until = service.local_text(now + float(cfg.people.verification.link_valid), cfg.zone)
    typer.echo(
        f"{len(sent)} confirm link(s) queued; `nachtwacht serve` sends them; valid until {until}"
    )


def contacts_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Each contact's channels and whether they are verified, stale, or not (yet)."""
    from nachtwacht.cli.common import open_store
    from nachtwacht.oncall import verify

    cfg = settings(config)
    now = SystemClock().now()
    with open_store(cfg) as store, store.connect() as conn:
        entries = verify.state(conn, cfg, now)
    if as_json:
        print_json(entries)
        return
    grouped = verify.by_contact(entries)
    for c in cfg.people.contacts:
        roles = ", ".join(c.roles) or "no role"
        typer.echo(f"{c.id:<12} {c.name} ({roles})")
        for e in grouped.get(c.id, []):
            when = f" {service.local_text(e['verified_at'], cfg.zone)}" if e["verified_at"] else ""
            typer.echo(
                f"  {e['channel']:<12} {e['words']:<7} {e['address']:<28} "
                f"{STATUS_WORDS[e['status']]}{when}"
            )
        if c.id not in grouped:
            typer.echo("  (no channel reaches this contact)")


contacts_app.command("verify")(contacts_verify)
contacts_app.command("list")(contacts_list)
