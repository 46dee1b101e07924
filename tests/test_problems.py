"""A domain's refusal (`Problem`) is mapped once: to an HTTP status and JSON by web/errors.py,
to one `error:` line and an exit code by the root command (decision 19)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from nachtwacht.analytics.flags import FlagError
from nachtwacht.cli.main import app as cli
from nachtwacht.clock import FakeClock
from nachtwacht.incidents.service import IncidentError
from nachtwacht.oncall.service import OncallError
from nachtwacht.problems import Problem
from nachtwacht.reviews.service import ReviewError
from nachtwacht.store.db import Store
from nachtwacht.web import errors
from nachtwacht.web.app import create_app
from tests.auth_helpers import fast_hashing  # noqa: F401 - fixture
from tests.helpers import admin_token, settings_for

BIN = str(Path(sys.executable).parent / "nachtwacht")
SITE = "probes:\n  - {name: db, kind: tcp, host: 127.0.0.1, port: 1, component: database}\n"


def test_a_kind_is_a_status_and_an_exit_code() -> None:
    assert (Problem("x").kind, Problem("x").http_status, Problem("x").exit_code) == (
        "invalid",
        422,
        2,
    )
    # an incident's refusal is about its state unless said otherwise; a review's is one
    assert IncidentError("resolved", "status").http_status == 409
    assert ReviewError("no follow-up 3", "id", kind="not_found").http_status == 404
    assert IncidentError("closed").exit_code == 1
    assert FlagError("unknown flag").field == "name"
    # a ValueError before it became a Problem still is one
    assert isinstance(OncallError("bad"), ValueError)


def test_any_problem_from_a_route_is_json_with_its_status() -> None:
    app = FastAPI()
    errors.install(app)

    @app.get("/refuse/{kind}")
    def refuse(kind: str) -> None:
        raise OncallError("no such thing", "id", kind=kind)  # type: ignore[arg-type]

    with TestClient(app) as c:
        for kind, status in (("not_found", 404), ("conflict", 409), ("invalid", 422)):
            answer = c.get(f"/refuse/{kind}")
            assert answer.status_code == status
            assert answer.json() == {"detail": "no such thing", "field": "id"}


@pytest.fixture
def client(sqlite_store: Store, clock: FakeClock, fast_hashing: None) -> Iterator[TestClient]:  # noqa: F811
    app = create_app(settings_for(SITE, sqlite_store.url), sqlite_store, clock, start_engine=False)
    token = admin_token(sqlite_store, clock.now())
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def test_a_service_refusal_reaches_the_api_client(client: TestClient) -> None:
    missing = client.get("/api/v1/incidents/999")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no incident 999", "field": "id"}
    made = client.post("/api/v1/incidents", json={"title": "db down", "severity": 2})
    assert made.status_code == 201, made.text
    nothing = client.put(f"/api/v1/incidents/{made.json()['id']}/postmortem", json={})
    assert nothing.status_code == 422 and nothing.json()["field"] == "root_cause"
    assert nothing.json()["detail"].startswith("nothing to set")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "nachtwacht.yaml"
    path.write_text(f"store:\n  url: sqlite:///{tmp_path / 'nw.db'}\n" + SITE)
    return path


def test_a_command_reports_a_problem_in_one_line_and_its_exit_code(config: Path) -> None:
    # the installed command: main() around the root command
    run = subprocess.run(
        [BIN, "incident", "show", "999", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines() == ["error: no incident 999 (id)"]
    assert "Traceback" not in run.stderr
    # in process, as most CLI tests run it: the same line and code
    result = CliRunner().invoke(cli, ["incident", "show", "999", "-c", str(config)])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert result.stderr.splitlines() == ["error: no incident 999 (id)"]
