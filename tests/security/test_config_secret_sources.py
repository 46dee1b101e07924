"""Secrets from the environment (`${VAR}`) and from files (`*_file:`), so the YAML holds none.

What is filled in is what the program uses; what is shown (settings page, `config validate`,
`doctor`) keeps it masked, because a value that came from outside the file is secret.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from nachtwacht.cli.main import app
from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import ConfigError, load_config
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.auth_helpers import add_user, fast_hashing, login  # noqa: F401 - fixture
from tests.conftest import free_port

runner = CliRunner()
SMTP_PASSWORD = "smtp-from-env-5521"
SIGNATURE = "sigFromEnv0a1b2c3d"
FILE_PASSWORD = "pw-from-file-7716"
TOKEN = "api-token-from-file-3390"


def write(tmp_path: Path, store_url: str, body: str) -> Path:
    path = tmp_path / "nachtwacht.yaml"
    path.write_text(f"store:\n  url: {store_url}\n{body}", encoding="utf-8")
    return path


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NW_TEST_SMTP_PASSWORD", SMTP_PASSWORD)
    monkeypatch.setenv("NW_TEST_SIG", SIGNATURE)
    monkeypatch.delenv("NW_TEST_UNSET", raising=False)


@pytest.fixture
def secret_files(tmp_path: Path) -> Path:
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "db").write_text(FILE_PASSWORD + "\n")  # as `echo ... > file` writes it
    (folder / "token").write_text(TOKEN)
    return folder


def sourced_config(tmp_path: Path, store_url: str, port: int) -> Path:
    return write(
        tmp_path,
        store_url,
        f"""
notify:
  channels:
    mail: {{kind: email, host: 127.0.0.1, port: {port}, username: nw,
            password: "${{NW_TEST_SMTP_PASSWORD}}"}}
    relay: {{kind: email, host: 127.0.0.1, port: {port}, password_file: secrets/db}}
runbooks:
  secret_vars:
    api_token_file: secrets/token
probes:
  - {{name: shop, kind: http, url: "http://127.0.0.1:{port}/health?sig=${{NW_TEST_SIG}}"}}
  - {{name: orders, kind: sql, url: "sqlite:///orders.db",
      description: "the shop's orders; the on-call script runs as ${{NW_TEST_SMTP_PASSWORD}}"}}
  - name: backup
    kind: command
    command: [sh, -c, "echo $${{HOME}}"]
  - name: remote
    kind: http
    url: http://127.0.0.1:{port}/
    headers:
      Authorization: "Bearer ${{NW_TEST_SIG}}"
""",
    )


def test_an_environment_variable_fills_a_value_and_stays_masked_on_the_settings_page(
    tmp_path: Path,
    sqlite_store: Store,
    clock: FakeClock,
    env: None,
    secret_files: Path,
    fast_hashing: None,  # noqa: F811
) -> None:
    settings = load_config(sourced_config(tmp_path, sqlite_store.url, free_port()))
    assert settings.notify.channels["mail"].password == SMTP_PASSWORD  # type: ignore[union-attr]
    shop = settings.probes[0]
    assert str(shop.url).endswith(f"?sig={SIGNATURE}")  # type: ignore[attr-defined]
    # `$${` is a literal `${`, for the shell
    assert settings.probes[2].command == ["sh", "-c", "echo ${HOME}"]  # type: ignore[attr-defined]

    add_user(sqlite_store, clock, "vic", "viewer")
    with TestClient(create_app(settings, sqlite_store, clock, start_engine=False)) as client:
        login(client, "vic")
        html = client.get("/settings", headers={"Accept": "text/html"}).text
    assert "echo ${HOME}" in html
    # a value from the environment is secret wherever it went, even into a description
    assert SMTP_PASSWORD not in html and SIGNATURE not in html
    assert "the on-call script runs as ••••••" in html


def test_a_file_fills_the_key_without_its_suffix_and_stays_masked(
    tmp_path: Path, sqlite_store: Store, env: None, secret_files: Path
) -> None:
    path = write(
        tmp_path,
        sqlite_store.url,
        f"""
notify:
  channels:
    mail: {{kind: email, username: nw, password_file: {secret_files / "db"}}}
runbooks:
  secret_vars:
    api_token_file: secrets/token
""",
    )
    settings = load_config(path)
    # the trailing newline of the file is no part of the secret; a relative path is relative
    # to the config file
    assert settings.notify.channels["mail"].password == FILE_PASSWORD  # type: ignore[union-attr]
    assert settings.runbooks.secret_vars == {"api_token": TOKEN}

    from nachtwacht.config.redact import settings_secrets, settings_shown
    from nachtwacht.config.redactor import Redactor

    shown = json.dumps(settings_shown(settings))
    assert FILE_PASSWORD not in shown and TOKEN not in shown
    # and in free text (an evidence bundle's log lines)
    line = f"login as nw with {FILE_PASSWORD} failed; token {TOKEN}"
    assert Redactor(settings_secrets(settings)).text(line) == (
        "login as nw with •••••• failed; token ••••••"
    )


def test_a_missing_environment_variable_is_a_config_error_naming_the_key_and_the_variable(
    tmp_path: Path, sqlite_store: Store, env: None
) -> None:
    path = write(
        tmp_path,
        sqlite_store.url,
        'notify:\n  channels:\n    mail:\n      kind: email\n      password: "${NW_TEST_UNSET}"\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem.key == "notify.channels.mail.password" and problem.line == 7
    assert problem.message == "environment variable NW_TEST_UNSET is not set"


def test_an_unreadable_secret_file_is_a_config_error_naming_the_key(
    tmp_path: Path, sqlite_store: Store
) -> None:
    path = write(
        tmp_path,
        sqlite_store.url,
        "notify:\n  channels:\n    mail: {kind: email, password_file: secrets/missing}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem.key == "notify.channels.mail.password_file" and problem.line == 5
    assert problem.message == (
        f"cannot read {tmp_path / 'secrets' / 'missing'}: No such file or directory"
    )


def test_a_secret_and_its_file_together_are_refused(
    tmp_path: Path, sqlite_store: Store, secret_files: Path
) -> None:
    path = write(
        tmp_path,
        sqlite_store.url,
        "notify:\n  channels:\n    mail: {kind: email, password: x, password_file: secrets/db}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem.key == "notify.channels.mail.password_file"
    assert problem.message == "set password or password_file, not both"


@pytest.fixture
def sourced(tmp_path: Path, sqlite_store: Store, env: None, secret_files: Path) -> Iterator[Path]:
    sqlite_store.migrate()
    yield sourced_config(tmp_path, sqlite_store.url, free_port())


def test_config_validate_reads_env_and_file_secrets_and_prints_none(sourced: Path) -> None:
    result = runner.invoke(app, ["config", "validate", "-c", str(sourced)])
    assert result.exit_code == 0, result.output
    assert "ok (4 probes" in result.output
    for secret in (SMTP_PASSWORD, SIGNATURE, FILE_PASSWORD, TOKEN):
        assert secret not in result.output


def test_doctor_reads_env_and_file_secrets_and_prints_none(sourced: Path) -> None:
    result = runner.invoke(app, ["doctor", "--json", "--config", str(sourced)])
    checks = {c["name"]: c for c in json.loads(result.output)["checks"]}
    assert checks["config"]["level"] == "ok", result.output
    # the clock is asked of the first http probe, whose URL is signed
    assert "health?sig=••••••" in checks["clock skew"]["message"]
    for secret in (SMTP_PASSWORD, SIGNATURE, FILE_PASSWORD, TOKEN):
        assert secret not in result.output
