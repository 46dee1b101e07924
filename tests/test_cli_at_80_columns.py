"""The CLI at 80 columns, for the person woken at 3 a.m.: help that reads, wherever `--help`
is typed and whatever it is typed after; a bare command group shows its help; the incident
verbs take their text alike (`-m`). `status` at 80 columns is in test_cli_status.py."""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from nachtwacht.cli import main as cli_main
from nachtwacht.cli.main import app
from nachtwacht.probes import cli as probes_cli

runner = CliRunner()
WIDTH = 80


def _walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, (*path, name))


def _root() -> Any:
    """The whole command tree: the root loads a command's module only when it is asked for."""
    root = typer.main.get_command(app)
    root.load_all()  # type: ignore[attr-defined]
    return root


TREE = list(_walk(_root()))
PATHS = [path for path, _ in TREE]
GROUPS = [path for path, cmd in TREE if path and hasattr(cmd, "commands")]
# a group that does its own work without a subcommand (`nachtwacht oncall`: who is on call)
BARE_GROUPS = [p for p in GROUPS if not getattr(dict(TREE)[p], "invoke_without_command", False)]


@pytest.fixture
def quiet_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config whose store (tmp_path/data) must never appear: help touches nothing."""
    config = tmp_path / "nachtwacht.yaml"
    config.write_text("site: night\nprobes: []\n", encoding="utf-8")
    monkeypatch.setenv("NACHTWACHT_CONFIG", str(config))
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    return config


def _help(args: list[str]) -> Any:
    return runner.invoke(app, args, env={"COLUMNS": str(WIDTH)}, prog_name="nachtwacht")


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "nachtwacht")
def test_help_works_for_every_command_and_touches_nothing(
    path: tuple[str, ...], quiet_config: Path
) -> None:
    result = _help([*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and " ".join(("nachtwacht", *path)) in result.output
    assert max(len(line) for line in result.output.splitlines()) <= WIDTH
    assert sorted(p.name for p in quiet_config.parent.iterdir()) == ["nachtwacht.yaml"]


@pytest.mark.parametrize(
    ("args", "usage"),
    [
        (["incident", "ack", "--help"], "incident ack"),
        (["--config", "x.yaml", "incident", "--help"], "incident"),
        (["incident", "ack", "3", "--help"], "incident ack"),
        (["incident", "--help", "ack"], "incident ack"),
        (["--help", "incident"], "incident"),
        # after an option that takes a value: still help, never the value
        (["incident", "resolve", "3", "-m", "--help"], "incident resolve"),
        (["incident", "update", "3", "--message", "--help"], "incident update"),
        (["status", "-c", "--help"], "status"),
        (["--config", "--help", "incident"], "incident"),
    ],
)
def test_help_wherever_it_is_typed(args: list[str], usage: str, quiet_config: Path) -> None:
    result = _help(args)
    assert result.exit_code == 0, result.output
    assert f"nachtwacht {usage} [OPTIONS]" in result.output
    assert sorted(p.name for p in quiet_config.parent.iterdir()) == ["nachtwacht.yaml"]


def test_help_after_double_dash_is_a_value(quiet_config: Path) -> None:
    # `--` ends the options: what follows is text, as in every other command-line tool
    result = _help(["incident", "note", "3", "--", "--help"])
    assert "Usage:" not in result.output


def _paragraphs(output: str) -> list[list[str]]:
    """The description above the first box of a help screen, as paragraphs of lines."""
    text = output.split("╭")[0]
    paragraphs: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.strip():
            paragraphs[-1].append(line.strip())
        elif paragraphs[-1]:
            paragraphs.append([])
    return [p for p in paragraphs if p and not p[0].startswith("Usage:")]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "nachtwacht")
def test_help_text_wraps_cleanly_at_80_columns(path: tuple[str, ...], quiet_config: Path) -> None:
    """No ragged line: a line is only broken where the next word would not have fitted."""
    result = _help([*path, "--help"])
    room = WIDTH - 2  # rich pads the text by a column either side
    for paragraph in _paragraphs(result.output):
        for line, following in zip(paragraph, paragraph[1:], strict=False):
            if line.startswith(("- ", "* ")) or following.startswith(("- ", "* ")):
                continue
            word = following.split()[0]
            assert len(line) + 1 + len(word) > room, f"broken wrap before {word!r}:\n{line}"


def test_status_help_summary_and_paragraphs_read_whole(quiet_config: Path) -> None:
    result = _help(["status", "--help"])
    shown = " ".join(result.output.split("╭")[0].split())
    doc = inspect.cleandoc(probes_cli.status.__doc__ or "")
    for paragraph in doc.split("\n\n"):
        # every word in order, none broken in two
        assert " ".join(paragraph.split()) in shown


@pytest.mark.parametrize("group", BARE_GROUPS, ids=" ".join)
def test_a_group_without_a_command_shows_its_help(
    group: tuple[str, ...],
    quiet_config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "argv", ["nachtwacht", *group])
    with pytest.raises(SystemExit) as ended:
        cli_main.main()
    out, err = capsys.readouterr()
    assert ended.value.code == 2  # an incomplete command line, as a missing argument is
    assert "Usage:" in out and f"{' '.join(group)} [OPTIONS] COMMAND" in out
    assert "error:" not in err, err
    assert sorted(p.name for p in quiet_config.parent.iterdir()) == ["nachtwacht.yaml"]


def test_every_incident_verb_that_takes_text_takes_it_as_m() -> None:
    incident = dict(TREE)[("incident",)]
    for verb in ("update", "severity", "escalate", "note", "resolve"):
        options = [p for p in incident.commands[verb].params if "-m" in p.opts]
        assert options and "--message" in options[0].opts, verb


def _timeline(config: Path) -> list[tuple[str, str]]:
    result = runner.invoke(app, ["incident", "show", "1", "--json", "-c", str(config)])
    assert result.exit_code == 0, result.output
    return [(e["kind"], e["message"]) for e in json.loads(result.output)["timeline"]]


def test_incident_note_takes_m_and_still_its_text_as_an_argument(quiet_config: Path) -> None:
    config = str(quiet_config)
    declared = ["incident", "declare", "-s", "2", "--title", "Disk full", "-c", config]
    assert runner.invoke(app, declared).exit_code == 0
    for args in (["-m", "took a dump"], ["looked at the logs"]):
        result = runner.invoke(app, ["incident", "note", "1", *args, "-c", config])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["incident", "severity", "1", "3", "-m", "one shop", "-c", config])
    assert result.exit_code == 0, result.output
    timeline = _timeline(quiet_config)
    assert ("note", "took a dump") in timeline and ("note", "looked at the logs") in timeline
    assert any("one shop" in message for _, message in timeline)
    # twice, or not at all: a usage error, and nothing written
    for args in (["-m", "one", "two"], []):
        result = runner.invoke(app, ["incident", "note", "1", *args, "-c", config])
        assert result.exit_code == 2 and "error:" in result.output
    assert len(_timeline(quiet_config)) == len(timeline)
