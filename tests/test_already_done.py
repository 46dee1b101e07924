"""Acknowledging what is already acknowledged, resolving what already resolved itself: the
person was right, someone (or Nachtwacht) was just quicker. The CLI, the incident page and the API
say by whom and when, change nothing, and succeed (exit 0, 200)."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from nachtwacht.cli.main import app as cli
from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import load_config
from nachtwacht.incidents import escalation
from nachtwacht.incidents import service as incidents
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.helpers import admin_token, settings_for

runner = CliRunner()
HHMM = r"\d\d:\d\d"


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "nachtwacht.yaml"
    path.write_text(f"store:\n  url: sqlite:///{tmp_path / 'nw.db'}\nprobes: []\n")
    return path


def _events(config: Path) -> int:
    settings = load_config(config)
    store = Store(settings.store.url)
    try:
        with store.connect() as conn:
            return len(incidents.timeline(conn, 1))
    finally:
        store.dispose()


def test_cli_ack_twice_says_who_acknowledged_and_exits_0(tmp_path: Path) -> None:
    config = _config(tmp_path)
    c = ["-c", str(config)]
    made = runner.invoke(cli, ["incident", "declare", "--title", "db down", "-s", "2", *c])
    assert made.exit_code == 0, made.output
    first = runner.invoke(cli, ["incident", "ack", "1", "--actor", "olga", *c])
    assert first.exit_code == 0, first.output
    before = _events(config)
    again = runner.invoke(cli, ["incident", "ack", "1", "--actor", "tina", *c])
    assert again.exit_code == 0, again.output
    assert re.search(
        rf"^incident 1 already acknowledged by olga at {HHMM}; nothing to do$",
        again.output,
        re.M,
    ), again.output
    assert _events(config) == before


def test_cli_resolving_what_resolved_itself_says_when_and_exits_0(tmp_path: Path) -> None:
    config = _config(tmp_path)
    c = ["-c", str(config)]
    made = runner.invoke(cli, ["incident", "declare", "--title", "db down", "-s", "1", *c])
    assert made.exit_code == 0, made.output
    settings = load_config(config)
    store = Store(settings.store.url)
    with store.begin() as conn:  # every alert recovered: Nachtwacht resolves it, no gate
        escalation.resolve(
            conn, settings, 1, "nachtwacht", incidents.require(conn, 1)["detected_at"] + 60
        )
    store.dispose()
    before = _events(config)
    late = runner.invoke(cli, ["incident", "resolve", "1", "-m", "restarted", *c])
    assert late.exit_code == 0, late.output
    assert re.search(
        rf"^incident 1 already resolved at {HHMM} by nachtwacht; nothing to do$", late.output, re.M
    ), late.output
    assert "error" not in late.output
    assert _events(config) == before


def test_the_api_answers_200_and_says_it_was_already_done(
    sqlite_store: Store, clock: FakeClock
) -> None:
    settings = settings_for("probes: []\n", sqlite_store.url)
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    token = admin_token(sqlite_store, clock.now(), role="responder")
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        made = client.post("/api/v1/incidents", json={"title": "db down", "severity": 3})
        incident = made.json()["id"]
        first = client.post(f"/api/v1/incidents/{incident}/ack")
        assert first.status_code == 200 and "already" not in first.json()
        again = client.post(f"/api/v1/incidents/{incident}/ack")
        assert again.status_code == 200
        assert re.fullmatch(
            rf"incident {incident} already acknowledged by token:\S+ at {HHMM}",
            again.json()["already"],
        )
        with sqlite_store.begin() as conn:
            escalation.resolve(conn, settings, incident, "nachtwacht", clock.now())
        late = client.post(f"/api/v1/incidents/{incident}/resolve", json={"message": "fixed"})
        assert late.status_code == 200, late.text
        assert re.fullmatch(
            rf"incident {incident} already resolved at {HHMM} by nachtwacht", late.json()["already"]
        )
