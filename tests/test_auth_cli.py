"""`nachtwacht user|token|ingest-key|audit` through typer's CliRunner on the auth apps."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from nachtwacht.auth import audit as auth_audit
from nachtwacht.auth import cli, logins, sessions, tokens
from nachtwacht.cli.main import app as main_app
from nachtwacht.clock import SystemClock
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.auth_helpers import PASSWORD, fast_hashing  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("fast_hashing")
runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "nachtwacht.yaml"
    path.write_text(f"site: test\nstore:\n  url: sqlite:///{tmp_path / 'nw.db'}\n")
    return str(path)


def _store(config: str) -> Store:
    store = Store(f"sqlite:///{Path(config).parent / 'nw.db'}")
    store.migrate()
    return store


def _login(config: str, name: str, password: str = PASSWORD) -> logins.LoginOutcome:
    store = _store(config)
    try:
        with store.begin() as conn:
            return logins.login(conn, name, password, SystemClock().now(), ip="192.0.2.1")
    finally:
        store.dispose()


def _run(app: typer.Typer, *args: str, input: str | None = None) -> str:
    result = runner.invoke(app, list(args), input=input)
    assert result.exit_code == 0, result.output
    return result.output


def test_user_add_prompts_twice_and_the_user_can_log_in(config: str) -> None:
    out = _run(
        cli.user_app,
        *["add", "alice", "--role", "responder", "-c", config],
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert "added user alice (responder)" in out
    assert PASSWORD not in out
    assert _login(config, "alice").ok


def test_user_add_refuses_a_mismatched_repeat(config: str) -> None:
    result = runner.invoke(
        cli.user_app, ["add", "alice", "-c", config], input=f"{PASSWORD}\nsomething else\n"
    )
    assert result.exit_code != 0
    assert "do not match" in result.output
    assert not _login(config, "alice").ok


def test_user_add_reads_stdin_and_list_shows_role_and_state(config: str) -> None:
    add_bob = ["add", "bob", "--role", "admin", "--password-stdin", "-c", config]
    _run(cli.user_app, *add_bob, input=f"{PASSWORD}\n")
    _run(cli.user_app, "add", "vera", "--password-stdin", "-c", config, input=f"{PASSWORD}\n")
    rows = json.loads(_run(cli.user_app, "list", "--json", "-c", config))
    assert [(r["username"], r["role"], r["disabled"]) for r in rows] == [
        ("bob", "admin", False),
        ("vera", "viewer", False),
    ]
    assert "password_hash" not in rows[0]
    table = _run(cli.user_app, "list", "-c", config)
    assert "bob" in table and "admin" in table and "active" in table


def test_user_add_errors_are_one_line_and_change_nothing(config: str) -> None:
    args = ["add", "eve", "--role", "root", "--password-stdin", "-c", config]
    bad_role = runner.invoke(cli.user_app, args, input=f"{PASSWORD}\n")
    assert bad_role.exit_code == 2 and "unknown role 'root'" in bad_role.output
    # refusals go through the root command, where a Problem becomes its line and exit code
    short = runner.invoke(
        main_app, ["user", "add", "eve", "--password-stdin", "-c", config], input="short\n"
    )
    assert short.exit_code == 2
    assert short.output.strip().startswith("error: the password must be at least 10 characters")
    _run(cli.user_app, "add", "eve", "--password-stdin", "-c", config, input=f"{PASSWORD}\n")
    again = runner.invoke(
        main_app, ["user", "add", "EVE", "--password-stdin", "-c", config], input=f"{PASSWORD}\n"
    )
    assert again.exit_code == 1 and "already exists" in again.output


def test_passwd_changes_the_password_and_ends_sessions(config: str) -> None:
    _run(cli.user_app, "add", "alice", "--password-stdin", "-c", config, input=f"{PASSWORD}\n")
    session = _login(config, "alice")
    out = _run(cli.user_app, "passwd", "alice", "-c", config, input="new passphrase\n" * 2)
    assert "1 session(s) ended" in out
    assert not _login(config, "alice").ok
    assert _login(config, "alice", "new passphrase").ok
    store = _store(config)
    with store.begin() as conn:
        assert sessions.resolve_session(conn, session.token or "", SystemClock().now()) is None
        actors = {e["actor"] for e in auth_audit.audit_log(conn, action="user.passwd")}
    store.dispose()
    assert len(actors) == 1 and actors.pop().startswith("cli:")


def test_disable_refuses_login_and_enable_restores_it(config: str) -> None:
    _run(cli.user_app, "add", "alice", "--password-stdin", "-c", config, input=f"{PASSWORD}\n")
    assert "alice disabled" in _run(cli.user_app, "disable", "alice", "-c", config)
    assert not _login(config, "alice").ok
    assert json.loads(_run(cli.user_app, "list", "--json", "-c", config))[0]["disabled"]
    _run(cli.user_app, "enable", "alice", "-c", config)
    assert _login(config, "alice").ok
    missing = runner.invoke(main_app, ["user", "disable", "nobody", "-c", config])
    assert missing.exit_code == 2 and "no user is named 'nobody'" in missing.output


def test_sessions_lists_and_revokes_all(config: str) -> None:
    _run(cli.user_app, "add", "alice", "--password-stdin", "-c", config, input=f"{PASSWORD}\n")
    _login(config, "alice")
    _login(config, "alice")
    rows = json.loads(_run(cli.user_app, "sessions", "alice", "--json", "-c", config))
    assert len(rows) == 2 and rows[0]["ip"] == "192.0.2.1"
    assert "ended 2 session(s)" in _run(
        cli.user_app, "sessions", "alice", "--revoke-all", "-c", config
    )
    assert "no active sessions" in _run(cli.user_app, "sessions", "alice", "-c", config)


def test_token_is_printed_once_stored_hashed_and_revocable(config: str) -> None:
    out = _run(cli.token_app, "create", "ci-deploy", "--role", "responder", "-c", config)
    token = next(line for line in out.splitlines() if line.startswith("nwt_"))
    listed = _run(cli.token_app, "list", "-c", config)
    assert "ci-deploy" in listed and token not in listed
    store = _store(config)
    with store.connect() as conn:
        assert token not in json.dumps(
            [dict(r) for r in conn.execute(select(t.api_tokens)).mappings()]
        )
        token_id = conn.execute(select(t.api_tokens.c.id)).scalar_one()
    _run(cli.token_app, "revoke", str(token_id), "-c", config)
    with store.begin() as conn:
        assert tokens.resolve_token(conn, token, SystemClock().now()) is None
    store.dispose()
    assert "no API tokens" in _run(cli.token_app, "list", "-c", config)


def test_ingest_key_create_list_revoke(config: str) -> None:
    created = json.loads(
        _run(
            cli.ingest_key_app,
            "create",
            "alertmanager",
            "--scope",
            "alerts",
            "--json",
            "-c",
            config,
        )
    )
    assert created["key"].startswith("nwk_") and created["scope"] == "alerts"
    rows = json.loads(_run(cli.ingest_key_app, "list", "--json", "-c", config))
    assert rows[0]["name"] == "alertmanager" and "key" not in rows[0]
    bad = runner.invoke(cli.ingest_key_app, ["create", "x", "--scope", "logs", "-c", config])
    assert bad.exit_code == 2
    _run(cli.ingest_key_app, "revoke", str(created["id"]), "-c", config)
    assert json.loads(_run(cli.ingest_key_app, "list", "--json", "-c", config)) == []


def test_audit_command_exports_csv(config: str) -> None:
    audit_app = typer.Typer()
    audit_app.command()(cli.audit)
    _run(cli.user_app, "add", "alice", "--password-stdin", "-c", config, input=f"{PASSWORD}\n")
    _login(config, "alice", "not the password")
    out = _run(audit_app, "--format", "csv", "-c", config)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["action"], r["ip"]) for r in rows] == [
        ("login.failed", "192.0.2.1"),
        ("user.add", ""),
    ]
    table = _run(audit_app, "--action", "login.", "-c", config)
    assert "login.failed" in table and "user.add" not in table
    bad = runner.invoke(audit_app, ["--since", "last week", "-c", config])
    assert bad.exit_code == 2 and "--since" in bad.output
