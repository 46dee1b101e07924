"""Runbook files: the built-ins load, a user file replaces a built-in of the same name, and
every mistake is reported as file:line: key: message."""

from __future__ import annotations

from pathlib import Path

import pytest

from nachtwacht.config.loader import parse_config
from nachtwacht.config.schema import Settings
from nachtwacht.runbooks import loader, service
from nachtwacht.runbooks.runner import RunError, find
from nachtwacht.runbooks.variables import known_names


def settings(tmp_path: Path, extra: str = "") -> Settings:
    """A config with a runbooks folder; `extra` is more keys of `runbooks:` (indented)."""
    text = f"""
store:
  url: sqlite:///{tmp_path / "nw.db"}
runbooks:
  dir: "{tmp_path / "runbooks"}"
{extra}"""
    return parse_config(text, "test.yaml")


def write(tmp_path: Path, name: str, text: str) -> Path:
    folder = tmp_path / "runbooks"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text.lstrip("\n"), encoding="utf-8")
    return path


def problems_of(tmp_path: Path, name: str, text: str) -> list[str]:
    path = write(tmp_path, name, text)
    cfg = settings(tmp_path)
    with pytest.raises(loader.RunbookError) as exc:
        loader.load_file(path, "systemd", known_names(cfg))
    return [str(p) for p in exc.value.problems]


def test_every_builtin_loads_in_both_variants(tmp_path: Path) -> None:
    for variant in ("systemd", "frappe"):
        cfg = settings(tmp_path, f"  variant: {variant}\n")
        rows, problems = service.catalog(cfg)
        assert problems == []
        assert {r["name"] for r in rows} == {
            "immediate-response",
            "monitoring-failure",
            "analytics-failure",
            "performance-failure",
            "security-incident",
            "database-emergency",
        }
        assert all(r["source"] == "builtin" and r["variant"] == variant for r in rows)
    # the frappe variant has bench steps the plain host has not
    systemd = find(settings(tmp_path), "monitoring-failure")
    assert "bench-restart" not in [s.id for s in systemd.steps]


def test_a_user_runbook_replaces_the_builtin_of_the_same_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "database-emergency",
        """
title: Our own database procedure
steps:
  - {id: call-dba, kind: manual, instruction: Call the DBA on +31 20 555 0100}
""",
    )
    rows, problems = service.catalog(settings(tmp_path))
    ours = next(r for r in rows if r["name"] == "database-emergency")
    assert problems == []
    assert (ours["title"], ours["steps"], ours["source"]) == (
        "Our own database procedure",
        1,
        str(path),
    )
    assert len(rows) == 6  # the other built-ins are still there


def test_a_typo_in_a_key_names_the_file_line_and_key(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        "typo",
        """
title: Typo
steps:
  - id: first
    kind: command
    comand: echo hi
""",
    )
    path = tmp_path / "runbooks" / "typo.yaml"
    assert (
        f"{path}:5: steps[0].comand: unknown key; allowed here: command, destructive, env, "
        "fail_if_output, id, if_var, kind, ok_exit, on_failure, only_if_failed, retries, "
        "retry_delay, timeout, title, variant; did you mean 'command'?"
    ) in problems
    assert len(problems) == 1


def test_an_unknown_kind_and_a_bad_value_are_pointed_at(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        "kinds",
        """
title: Kinds
steps:
  - id: first
    kind: comand
    command: echo hi
  - id: second
    kind: command
    command: echo hi
    retries: many
  - id: third
    kind: wait_for
    probe: all
    deadline: soon
""",
    )
    path = tmp_path / "runbooks" / "kinds.yaml"
    assert problems[0] == (
        f"{path}:4: steps[0].kind: unknown kind 'comand'; allowed kinds: capture_evidence, "
        "check, command, manual, notify, set_flag, wait_for; did you mean 'command'?"
    )
    assert problems[1].startswith(f"{path}:9: steps[1].retries: Input should be a valid integer")
    assert problems[2].startswith(f"{path}:13: steps[2].deadline: 'soon' is not a duration")


def test_an_unknown_variable_and_a_repeated_id_are_mistakes_of_the_file(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        "vars",
        """
title: Variables
steps:
  - id: hello
    kind: command
    command: echo {{ sight }}
  - id: hello
    kind: manual
    instruction: done
""",
    )
    path = tmp_path / "runbooks" / "vars.yaml"
    assert f"{path}:6: steps[1].id: 'hello' is already used by steps[0]" in problems
    problems = problems_of(
        tmp_path,
        "vars2",
        """
title: Variables
steps:
  - id: hello
    kind: command
    command: echo {{ sight }}
""",
    )
    assert problems == [
        f"{tmp_path / 'runbooks' / 'vars2.yaml'}:5: steps[0].command: unknown variable 'sight'; "
        "define it in runbooks.vars or as an input; did you mean 'site'?"
    ]


def test_invalid_yaml_and_a_broken_file_do_not_hide_the_others(tmp_path: Path) -> None:
    write(tmp_path, "broken", "title: [unclosed\nsteps: []\n")
    rows, problems = service.catalog(settings(tmp_path))
    assert len(rows) == 6
    assert len(problems) == 1 and "broken.yaml:2: invalid YAML" in problems[0]
    with pytest.raises(RunError) as exc:
        find(settings(tmp_path), "broken")
    assert exc.value.http_status == 422 and "invalid YAML" in str(exc.value)


def test_variables_of_the_config_are_known_and_inputs_too(tmp_path: Path) -> None:
    write(
        tmp_path,
        "custom",
        """
title: Uses config variables
inputs: {host: "the host to check"}
steps:
  - {id: ping, kind: check, command: "ping -c 1 {{ host }} && echo {{ team }}"}
""",
    )
    cfg = settings(tmp_path, "  vars: {team: ops}\n")
    detail = service.detail(cfg, "custom", {"host": "db1"})
    assert detail["steps"][0]["does"] == "$ ping -c 1 db1 && echo ops"
    assert detail["inputs"] == {
        "host": {"description": "the host to check", "default": None, "type": "text"}
    }
