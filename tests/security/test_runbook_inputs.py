"""A runbook input cannot reach beyond the one value it names: no second command after a
newline, no option, no way out of a directory, no network that locks everyone out.

Built-in and user runbooks alike run for real against the sandbox's stand-in tools
(tests/test_runbooks_sandbox.py): a refused input must leave the stand-ins' log empty.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nachtwacht.clock import FakeClock
from nachtwacht.runbooks.runner import RunError
from nachtwacht.runbooks.variables import Variables
from nachtwacht.store.db import Store
from tests.test_runbooks_sandbox import (
    Sandbox,
    run,
    sandbox_fixture,  # noqa: F401 - the `sandbox` fixture
)

# a user runbook with an input of each type, and one untyped address named like one
USER_RUNBOOK = """
title: Look at things
inputs:
  unit: {description: "a unit", type: name}
  log: {description: "a log file", type: path, default: /var/log/syslog}
  block_ip: {description: "untyped: guessed from the name", default: ""}
  note: {description: "free text", default: ok}
steps:
  - {id: status, kind: command, command: "systemctl status {{ unit }}"}
  - {id: tail, kind: command, command: "journalctl --file {{ log }} -n 1 {{ note }}"}
  - {id: block, kind: command, if_var: block_ip,
     command: "iptables -I INPUT -s {{ block_ip }} -j DROP"}
"""


def user_settings(sandbox: Sandbox, store: Store, tmp_path: Path):  # noqa: ANN201
    folder = tmp_path / "runbooks"
    folder.mkdir(exist_ok=True)
    (folder / "look.yaml").write_text(USER_RUNBOOK, encoding="utf-8")
    return sandbox.settings(store, runbooks=folder)


def refused(store: Store, settings, clock: FakeClock, name: str, inputs: dict[str, str]) -> str:  # noqa: ANN001
    with pytest.raises(RunError) as exc:
        run(store, settings, clock, name, inputs=inputs)
    assert exc.value.http_status == 422
    assert exc.value.field in inputs, str(exc.value)
    return str(exc.value)


@pytest.mark.parametrize(
    "value",
    [
        "203.0.113.9\n",  # re.match with `$` let this through: the newline ended the command
        "203.0.113.9\nreboot",
        "-j",  # an option to iptables
        "--flush",
        "0.0.0.0/0",  # everyone, the responder included
        "::/0",
        "0.0.0.0",
        "::ffff:0.0.0.0/96",  # every IPv4 address, written as IPv6
        "10.0.0.0/8",
        "../etc",
        "not-an-address",
    ],
)
def test_builtin_block_address_refuses_what_is_not_one_address_or_small_network(
    sqlite_store: Store, clock: FakeClock, sandbox: Sandbox, value: str
) -> None:
    settings = sandbox.settings(sqlite_store)
    message = refused(sqlite_store, settings, clock, "security-incident", {"suspicious_ip": value})
    assert message.startswith("input 'suspicious_ip' ")
    assert sandbox.calls() == []


@pytest.mark.parametrize("value", ["203.0.113.9", "203.0.113.0/24", "2001:db8::1"])
def test_builtin_block_address_still_blocks_an_address_or_a_small_network(
    sqlite_store: Store, clock: FakeClock, sandbox: Sandbox, value: str
) -> None:
    settings = sandbox.settings(sqlite_store)
    view = run(sqlite_store, settings, clock, "security-incident", inputs={"suspicious_ip": value})
    block = next(s for s in view["steps"] if s["id"] == "block-address")
    assert block["status"] == "ok", block["output"]
    assert any(c.startswith(f"nachtwacht security block {value} ") for c in sandbox.calls())


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        ({"unit": "nginx\n"}, "unit"),
        ({"unit": "--help"}, "unit"),
        ({"unit": "../../etc/passwd"}, "unit"),
        ({"unit": "etc/passwd"}, "unit"),  # a name has no slash
        ({"unit": "nginx", "log": "/var/log/../../etc/shadow"}, "log"),
        ({"unit": "nginx", "log": "-"}, "log"),
        ({"unit": "nginx", "block_ip": "0.0.0.0/0"}, "block_ip"),
        ({"unit": "nginx", "block_ip": "::/0"}, "block_ip"),
        ({"unit": "nginx", "note": "0.0.0.0/0"}, "note"),  # a network, even untyped
        ({"unit": "nginx", "note": ".."}, "note"),
        ({"unit": "nginx", "note": "-rf"}, "note"),
    ],
)
def test_user_runbook_inputs_refuse_newlines_options_traversal_and_broad_networks(
    sqlite_store: Store,
    clock: FakeClock,
    sandbox: Sandbox,
    tmp_path: Path,
    inputs: dict[str, str],
    field: str,
) -> None:
    settings = user_settings(sandbox, sqlite_store, tmp_path)
    message = refused(sqlite_store, settings, clock, "look", inputs)
    assert message.startswith(f"input '{field}' ")
    assert sandbox.calls() == []


def test_user_runbook_with_ordinary_inputs_runs_them_as_given(
    sqlite_store: Store, clock: FakeClock, sandbox: Sandbox, tmp_path: Path
) -> None:
    settings = user_settings(sandbox, sqlite_store, tmp_path)
    inputs = {"unit": "worker@default.service", "log": "/var/log/app.log", "block_ip": "192.0.2.7"}
    view = run(sqlite_store, settings, clock, "look", inputs=inputs)
    assert [s["status"] for s in view["steps"]] == ["ok", "ok", "ok"], view["summary"]
    assert sandbox.calls() == [
        "systemctl status worker@default.service",
        "journalctl --file /var/log/app.log -n 1 ok",
        "iptables -I INPUT -s 192.0.2.7 -j DROP",
    ]


def test_inputs_are_quoted_into_commands_and_config_variables_are_not() -> None:
    # the character check already keeps quotes and spaces out; the quoting holds even if the
    # check is ever loosened, and an empty input stays one (empty) argument
    values = Variables(
        values={"sudo": "sudo -n", "target": "a b; reboot", "empty": ""},
        inputs={"target", "empty"},
    )
    command = "{{ sudo }} ping {{ target }} {{ empty }}"
    assert values.render(command, masked=False, shell=True) == "sudo -n ping 'a b; reboot' ''"
    # shown the same way in a dry run; text that is not a command is left as it is
    assert values.render(command, masked=True, shell=True) == "sudo -n ping 'a b; reboot' ''"
    assert values.render("{{ target }}", masked=False) == "a b; reboot"
