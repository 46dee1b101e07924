"""`nachtwacht user|token|ingest-key|audit`: thin commands over the auth modules.

The CLI works on the store directly (whoever can read the config can read the database), so it
is the way back in when every admin is locked out: `nachtwacht user passwd admin`. Changes are
audited with the actor `cli:<login name>`.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy import Connection

from nachtwacht.auth import audit as auth_audit
from nachtwacht.auth import checks, ingest_keys, sessions, tokens, users
from nachtwacht.auth.checks import auth_settings
from nachtwacht.auth.models import ROLES, SCOPES, TOKEN_ROLES
from nachtwacht.cli.common import ConfigOption, JsonOption, fail, print_json, settings
from nachtwacht.clock import SystemClock
from nachtwacht.config.schema import Settings
from nachtwacht.store.db import Store, StoreError

user_app = typer.Typer(
    help="Users of the dashboard and API: add, list, passwd, disable, enable, sessions.",
    no_args_is_help=True,
)
token_app = typer.Typer(
    help="API tokens for scripts: create (shown once), list, revoke.", no_args_is_help=True
)
ingest_key_app = typer.Typer(
    help="Keys for ingestion endpoints (alerts, errors): create (shown once), list, revoke.",
    no_args_is_help=True,
)
T = TypeVar("T")

RoleOption = Annotated[str, typer.Option("--role", "-r", help=f"One of {', '.join(ROLES)}.")]
TokenRoleOption = Annotated[
    str,
    typer.Option(
        "--role",
        "-r",
        help=f"One of {', '.join(TOKEN_ROLES)}. metrics: may read /metrics and nothing else "
        "(for a Prometheus scrape).",
    ),
]


def _actor() -> str:
    try:
        name = os.environ.get("USER") or getpass.getuser()
    except OSError:
        name = "unknown"
    return f"cli:{name}"


@contextmanager
def _store(cfg: Settings) -> Iterator[Store]:
    store = Store(cfg.store.url)
    try:
        store.migrate()
        yield store
    finally:
        store.dispose()


def _run(cfg: Settings, work: Callable[[Connection, float], T]) -> T:
    """`work(conn, now)` in one transaction; a store error is one line (a refusal, an
    `AuthError`, is a `Problem`: cli/main.py gives it its line and exit code)."""
    try:
        with _store(cfg) as store, store.begin() as conn:
            return work(conn, SystemClock().now())
    except StoreError as exc:
        fail(f"cannot use the store: {exc}", 2)


def _read_password(from_stdin: bool, prompt: str = "Password") -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        if not password:
            fail("no password on standard input", 2)
        return password
    return typer.prompt(prompt, hide_input=True, confirmation_prompt=True)


def _local(value: str | None) -> str:
    if not value:
        return "-"
    ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return ts.astimezone().strftime("%Y-%m-%d %H:%M")


# ---------------------------------------------------------------------------- users

PasswordStdin = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from the first line of stdin."),
]


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="The username (a-z 0-9 . _ @ -).")],
    role: RoleOption = "viewer",
    password_stdin: PasswordStdin = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a user; asks for the password twice (or reads it with --password-stdin)."""
    cfg = settings(config)
    if role not in ROLES:
        tokens_only = " (metrics is for API tokens only)" if role == "metrics" else ""
        fail(f"unknown role '{role}'; use {', '.join(ROLES)}{tokens_only}", 2)
    password = _read_password(password_stdin)
    row = _run(
        cfg,
        lambda conn, now: users.add_user(
            conn, name, password, role, now, actor=_actor(), settings=auth_settings(cfg)
        ),
    )
    if as_json:
        print_json(row)
        return
    typer.echo(f"added user {row['username']} ({row['role']})")


@user_app.command("list")
def user_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Users with their role, state, last login and active sessions."""
    cfg = settings(config)
    rows = _run(cfg, lambda conn, now: users.list_users(conn, now))
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no users (the first `nachtwacht serve` creates `admin`)")
        return
    typer.echo(f"{'USER':<24} {'ROLE':<10} {'STATE':<22} {'LAST LOGIN':<17} SESSIONS")
    for r in rows:
        state = "disabled" if r["disabled"] else "active"
        if r["locked"]:
            # for the addresses in `--json`'s locked_from only: others may still log in
            state = f"locked to {_local(r['locked_until'])[11:]}"
        typer.echo(
            f"{r['username']:<24} {r['role']:<10} {state:<22} "
            f"{_local(r['last_login_at']):<17} {r['active_sessions']}"
        )


@user_app.command("passwd")
def user_passwd(
    name: Annotated[str, typer.Argument(help="The username.")],
    password_stdin: PasswordStdin = False,
    config: ConfigOption = None,
) -> None:
    """Set a user's password; also lifts a lock and ends the user's sessions."""
    cfg = settings(config)
    password = _read_password(password_stdin, "New password")
    ended = _run(
        cfg,
        lambda conn, now: users.set_password(
            conn, name, password, now, actor=_actor(), settings=auth_settings(cfg)
        ),
    )
    typer.echo(f"password of {name.strip().lower()} changed; {ended} session(s) ended")


def _set_disabled(name: str, disabled: bool, config: str | None) -> None:
    cfg = settings(config)
    row = _run(cfg, lambda conn, now: users.set_disabled(conn, name, disabled, now, actor=_actor()))
    typer.echo(f"{row['username']} {'disabled; sessions ended' if disabled else 'enabled'}")


@user_app.command("disable")
def user_disable(
    name: Annotated[str, typer.Argument(help="The username.")], config: ConfigOption = None
) -> None:
    """Disable a user: no more logins, and every session ends now."""
    _set_disabled(name, True, config)


@user_app.command("enable")
def user_enable(
    name: Annotated[str, typer.Argument(help="The username.")], config: ConfigOption = None
) -> None:
    """Enable a user again; also unlocks an account locked by wrong passwords."""
    _set_disabled(name, False, config)


@user_app.command("sessions")
def user_sessions(
    name: Annotated[str, typer.Argument(help="The username.")],
    revoke_all: Annotated[
        bool, typer.Option("--revoke-all", help="End every session of this user now.")
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """A user's active sessions; --revoke-all ends them (the step after a suspected breach)."""
    cfg = settings(config)
    if revoke_all:
        ended = _run(
            cfg, lambda conn, now: sessions.revoke_all_sessions(conn, name, now, actor=_actor())
        )
        if as_json:
            print_json({"user": name.strip().lower(), "sessions_revoked": ended})
        else:
            typer.echo(f"ended {ended} session(s) of {name.strip().lower()}")
        return
    rows = _run(cfg, lambda conn, now: sessions.list_sessions(conn, now, name))
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo(f"{name.strip().lower()} has no active sessions")
    for r in rows:
        typer.echo(
            f"#{r['id']:<6} from {r['ip'] or '?':<16} since {_local(r['created_at'])}  "
            f"last seen {_local(r['last_seen'])}  {(r['user_agent'] or '')[:50]}"
        )


# ---------------------------------------------------------------------------- tokens


def _print_secrets(rows: list[dict[str, Any]], extra: str) -> None:
    for r in rows:
        state = f"revoked {_local(r['revoked_at'])}" if r["revoked_at"] else "active"
        owner = f" for {r['owner']}" if r.get("owner") else ""
        typer.echo(
            f"#{r['id']:<5} {r['name']:<24} {r[extra]:<10} by {r['created_by']:<16} "
            f"last used {_local(r['last_used_at']):<17} {state}{owner}"
        )


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="What the token is for, e.g. 'backup-script'.")],
    role: TokenRoleOption = "viewer",
    owner: Annotated[
        str | None,
        typer.Option(
            "--owner",
            help="The user it acts for: it stops when they are disabled, and never has more "
            "than their role. Without it the token keeps its role until revoked.",
        ),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an API token; it is printed this once and stored only as a hash."""
    cfg = settings(config)
    if role not in TOKEN_ROLES:
        fail(f"unknown role '{role}'; use {', '.join(TOKEN_ROLES)}", 2)
    row = _run(
        cfg,
        lambda conn, now: tokens.create_token(conn, name, role, now, actor=_actor(), owner=owner),
    )
    if as_json:
        print_json(row)
        return
    typer.echo(f"token #{row['id']} '{row['name']}' ({row['role']}):")
    typer.echo(row["token"])
    typer.echo("store it now: it is not shown again. Use it as 'Authorization: Bearer <token>'.")


@token_app.command("list")
def token_list(
    revoked: Annotated[bool, typer.Option("--all", help="Include revoked tokens.")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """API tokens (never their secrets)."""
    cfg = settings(config)
    rows = _run(cfg, lambda conn, _now: tokens.list_tokens(conn, include_revoked=revoked))
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no API tokens")
    _print_secrets(rows, "role")


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(metavar="ID", help="The token's id.")],
    config: ConfigOption = None,
) -> None:
    """Revoke an API token: requests with it are refused from now on."""
    cfg = settings(config)
    row = _run(cfg, lambda conn, now: tokens.revoke_token(conn, token_id, now, actor=_actor()))
    typer.echo(f"revoked token #{row['id']} '{row['name']}'")


# ---------------------------------------------------------------------------- ingest keys


@ingest_key_app.command("create")
def ingest_key_create(
    name: Annotated[str, typer.Argument(help="The source, e.g. 'alertmanager'.")],
    scope: Annotated[
        str, typer.Option("--scope", "-s", help=f"One of {', '.join(SCOPES)}.")
    ] = "all",
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an ingest key; it is printed this once and stored only as a hash."""
    cfg = settings(config)
    if scope not in SCOPES:
        fail(f"unknown scope '{scope}'; use {', '.join(SCOPES)}", 2)
    row = _run(
        cfg, lambda conn, now: ingest_keys.create_ingest_key(conn, name, scope, now, actor=_actor())
    )
    if as_json:
        print_json(row)
        return
    typer.echo(f"ingest key #{row['id']} '{row['name']}' ({row['scope']}):")
    typer.echo(row["key"])
    typer.echo("store it now: it is not shown again. Send it as 'Authorization: Bearer <key>'.")


@ingest_key_app.command("list")
def ingest_key_list(
    revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ingest keys (never their secrets)."""
    cfg = settings(config)
    rows = _run(cfg, lambda conn, _now: ingest_keys.list_ingest_keys(conn, include_revoked=revoked))
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no ingest keys")
    _print_secrets(rows, "scope")


@ingest_key_app.command("revoke")
def ingest_key_revoke(
    key_id: Annotated[int, typer.Argument(metavar="ID", help="The key's id.")],
    config: ConfigOption = None,
) -> None:
    """Revoke an ingest key: its source is refused from now on."""
    cfg = settings(config)
    row = _run(
        cfg, lambda conn, now: ingest_keys.revoke_ingest_key(conn, key_id, now, actor=_actor())
    )
    typer.echo(f"revoked ingest key #{row['id']} '{row['name']}'")


# ---------------------------------------------------------------------------- audit


def audit(
    since: Annotated[
        str | None,
        typer.Option("--since", help="Epoch seconds or ISO 8601 (UTC unless it says so)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 100,
    action: Annotated[
        str | None, typer.Option("--action", help="e.g. login.failed, or 'login.' for all.")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="table, json, jsonl or csv.")
    ] = "table",
    config: ConfigOption = None,
) -> None:
    """The audit log, newest first: logins, and every change to users, sessions and keys."""
    if fmt not in ("table", "json", "jsonl", "csv"):
        fail(f"unknown format '{fmt}'; use table, json, jsonl or csv", 2)
    try:
        start = auth_audit.parse_since(since)
    except checks.AuthError as exc:
        fail(f"--since: {exc}", 2)
    cfg = settings(config)
    rows = _run(cfg, lambda conn, _now: auth_audit.audit_log(conn, start, limit, action=action))
    if fmt == "json":
        print_json(rows)
    elif fmt == "jsonl":
        sys.stdout.write(auth_audit.export_jsonl(rows))
    elif fmt == "csv":
        sys.stdout.write(auth_audit.export_csv(rows))
    else:
        if not rows:
            typer.echo("the audit log is empty" + (" for this filter" if action or since else ""))
        for r in rows:
            detail = ", ".join(f"{k}={v}" for k, v in sorted(r["detail"].items()))
            typer.echo(
                f"{_local(r['ts'])}  {r['actor']:<20} {r['action']:<20} {r['target'] or '-':<20} "
                f"{r['ip'] or '-':<15} {detail}"
            )
