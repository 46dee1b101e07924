"""What the CLI prints never decides what is committed.

`nachtwacht incident ack 2 | head -3` used to print inside the write transaction: the reader
going away raised there and rolled the acknowledgement back. Each command here runs as the
real executable with a stdout whose reader is already gone, and the store must still hold
the change; the exit is 141 (128 + SIGPIPE, what a shell reports for `yes | head -1`)
without a traceback. A static guard keeps output out of transactions in every CLI module.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Connection, func, select

from nachtwacht.incidents import service as incidents
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.incident_fixtures import SITE, site

BIN = str(Path(sys.executable).parent / "nachtwacht")
SRC = Path(__file__).resolve().parent.parent / "src" / "nachtwacht"
BROKEN_PIPE = 141
# block-buffered stdout as in real use, so output can also fail as late as the final flush
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | {"USER": "ops"}

RUNBOOK = """title: Two harmless steps
steps:
  - {id: first, kind: command, command: "echo first"}
  - {id: second, kind: command, command: "echo second"}
"""


def _count(table: object, *where: object) -> Callable[[Connection], int]:
    def query(conn: Connection) -> int:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()

    return query


def _incident(column: str, value: object) -> Callable[[Connection], int]:
    return _count(t.incidents, t.incidents.c.id == 1, getattr(t.incidents.c, column) == value)


# (command line, what the store holds afterwards, stdin); incident 1 is an open S2
CASES: dict[str, tuple[list[str], Callable[[Connection], int], str | None]] = {
    "incident declare": (
        ["incident", "declare", "--title", "Disk full", "--severity", "3"],
        _count(t.incidents, t.incidents.c.title == "Disk full"),
        None,
    ),
    "incident ack": (
        ["incident", "ack", "1"],
        _count(t.incidents, t.incidents.c.id == 1, t.incidents.c.acknowledged_at.is_not(None)),
        None,
    ),
    "incident update": (
        ["incident", "update", "1", "-m", "rolling back", "--status", "mitigating"],
        _incident("status", "mitigating"),
        None,
    ),
    "incident resolve --skip-checklist": (
        ["incident", "resolve", "1", "-m", "fixed", "--skip-checklist", "verified by hand"],
        _incident("status", "resolved"),
        None,
    ),
    "incident note": (
        ["incident", "note", "1", "looked at the logs"],
        _count(t.incident_events, t.incident_events.c.message.contains("looked at the logs")),
        None,
    ),
    "silence add": (
        ["silence", "add", "--probe", "db", "--duration", "1h"],
        _count(t.silences),
        None,
    ),
    "maintenance add": (
        ["maintenance", "add", "MariaDB upgrade", "--duration", "1h"],
        _count(t.maintenance),
        None,
    ),
    "project add": (["project", "add", "erp"], _count(t.error_projects), None),
    "token create": (["token", "create", "backup-script"], _count(t.api_tokens), None),
    "user add": (
        ["user", "add", "carla", "--password-stdin"],
        _count(t.users, t.users.c.username == "carla"),
        "a-long-enough-password-42\n",
    ),
    "followup add": (
        ["followup", "add", "1", "--title", "add disk alarm", "--owner", "olga", "--due", "7d"],
        _count(t.followups),
        None,
    ),
    # progress is printed between steps: a closed stdout must not stop the run half-way
    "runbook run": (
        ["runbook", "run", "two-steps", "--yes"],
        _count(t.runbook_runs, t.runbook_runs.c.status == "succeeded"),
        None,
    ),
}


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    (runbooks / "two-steps.yaml").write_text(RUNBOOK, encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'nw.db'}"
    (tmp_path / "nachtwacht.yaml").write_text(
        f'store:\n  url: {url}\nrunbooks:\n  dir: "{runbooks}"\n' + SITE, encoding="utf-8"
    )
    store = Store(url)
    try:
        store.migrate()
        with store.begin() as conn:
            incidents.open_incident(conn, site(store), title="Web slow", severity=2, now=1e9)
    finally:
        store.dispose()
    return tmp_path


def _with_closed_stdout(cwd: Path, args: list[str], stdin: str | None) -> tuple[int, str]:
    """Run the CLI with a pipe for stdout whose read end is closed before it starts."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [BIN, *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            input=stdin,
            text=True,
            cwd=cwd,
            env=ENV,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    return done.returncode, done.stderr


@pytest.mark.parametrize("name", list(CASES))
def test_a_closed_stdout_does_not_undo_the_write(cwd: Path, name: str) -> None:
    args, committed, stdin = CASES[name]
    code, stderr = _with_closed_stdout(cwd, args, stdin)
    store = Store(f"sqlite:///{cwd / 'nw.db'}")
    try:
        with store.connect() as conn:
            assert committed(conn) == 1, f"{name}: not committed (exit {code}): {stderr}"
    finally:
        store.dispose()
    assert code == BROKEN_PIPE, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr


def test_a_read_with_a_closed_stdout_exits_141_quietly(cwd: Path) -> None:
    # --json output sits in the buffer until exit: it must fail where main() handles it
    code, stderr = _with_closed_stdout(cwd, ["incident", "list", "--json"], None)
    assert (code, stderr) == (BROKEN_PIPE, "")


def test_help_with_a_closed_stdout_exits_141_quietly(cwd: Path) -> None:
    # typer's help goes through rich, which meets EPIPE by exiting 1 (`--help | head` failed)
    code, stderr = _with_closed_stdout(cwd, ["--help"], None)
    assert (code, stderr) == (BROKEN_PIPE, "")


# ---------------------------------------------------------------------------- static guard

# writing to the terminal, or waiting on it, while a transaction is open
OUTPUT_CALLS = {"print", "echo", "secho", "print_json", "write", "writelines", "confirm", "prompt"}
Fn = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda


def _cli_modules() -> list[Path]:
    return sorted([*SRC.glob("*/cli.py"), *(SRC / "cli").glob("*.py")])


def _is_begin(item: ast.withitem) -> bool:
    """`x.begin()`, also as one arm of `x.begin() if write else x.connect()`."""
    expr = item.context_expr
    arms = [expr.body, expr.orelse] if isinstance(expr, ast.IfExp) else [expr]
    return any(
        isinstance(a, ast.Call) and isinstance(a.func, ast.Attribute) and a.func.attr == "begin"
        for a in arms
    )


def _params(fn: Fn) -> list[str]:
    return [a.arg for a in (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs)]


def _own_nodes(node: ast.AST) -> list[ast.AST]:
    """`node`'s subtree without the bodies of functions defined in it (they run when called)."""
    out: list[ast.AST] = []
    todo = list(ast.iter_child_nodes(node))
    while todo:
        sub = todo.pop()
        out.append(sub)
        if not isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
            todo.extend(ast.iter_child_nodes(sub))
    return out


class _Module:
    """Follows what a transaction runs through one CLI module's own functions and callbacks.

    A call inside a transaction to a function of the module is followed into it; a call to a
    parameter (`work(conn)`) makes the function a runner, and what its callers pass there is
    followed too, until nothing new turns up.
    """

    def __init__(self, path: Path) -> None:
        self.tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        self.parent = {
            child: node for node in ast.walk(self.tree) for child in ast.iter_child_nodes(node)
        }
        self.problems: dict[str, str] = {}  # one per transaction or hand-over is enough
        self.runners: set[tuple[ast.AST, int]] = set()

    def _defs(self, scope: ast.AST) -> dict[str, ast.AST]:
        return {
            n.name: n
            for n in _own_nodes(scope)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        }

    def _resolve(self, name: str, at: ast.AST) -> tuple[str, ast.AST] | None:
        node = self.parent.get(at)
        while node is not None:
            if isinstance(node, Fn):
                if name in _params(node):
                    return "param", node
                if not isinstance(node, ast.Lambda) and name in self._defs(node):
                    return "def", self._defs(node)[name]
            node = self.parent.get(node)
        found = self._defs(self.tree).get(name)
        return ("def", found) if found is not None else None

    def _scan(self, fn: ast.AST, where: str, seen: frozenset[int] = frozenset()) -> None:
        body = fn.body if isinstance(fn, ast.Lambda) else fn
        for node in [body, *_own_nodes(body)] if body is not fn else _own_nodes(fn):
            self._check_call(node, where, seen)

    def _check_call(self, call: ast.AST, where: str, seen: frozenset[int]) -> None:
        if not isinstance(call, ast.Call):
            return
        func = call.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in OUTPUT_CALLS:
            root = where.split(" -> ")[0]
            self.problems.setdefault(root, f"{where} reaches {name}() at line {call.lineno}")
            return
        if not isinstance(func, ast.Name) or (hit := self._resolve(func.id, call)) is None:
            return
        kind, target = hit
        if kind == "param":
            if not isinstance(target, ast.Lambda):
                assert isinstance(target, Fn)
                self.runners.add((target, _params(target).index(func.id)))
        elif id(target) not in seen:
            self._scan(target, f"{where} -> {func.id}()", seen | {id(target)})

    def check(self) -> list[str]:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.With) and any(_is_begin(i) for i in node.items):
                for stmt in node.body:
                    for sub in [stmt, *_own_nodes(stmt)]:
                        self._check_call(sub, f"transaction at line {node.lineno}", frozenset())
        done: set[tuple[ast.AST, int]] = set()
        while todo := self.runners - done:
            for runner, pos in todo:
                done.add((runner, pos))
                self._check_callers(runner, pos)
        return sorted(self.problems.values())

    def _check_callers(self, runner: ast.AST, pos: int) -> None:
        assert isinstance(runner, Fn) and not isinstance(runner, ast.Lambda)
        param = _params(runner)[pos]
        for call in ast.walk(self.tree):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
                continue
            if self._resolve(call.func.id, call) != ("def", runner):
                continue
            args = [call.args[pos]] if pos < len(call.args) else []
            args += [k.value for k in call.keywords if k.arg == param]
            where = f"work handed to {runner.name}() at line {call.lineno}"
            for arg in args:
                if isinstance(arg, ast.Lambda):
                    self._scan(arg, where)
                elif isinstance(arg, ast.Name) and (hit := self._resolve(arg.id, arg)):
                    if hit[0] == "def":
                        self._scan(hit[1], where)
                    elif not isinstance(hit[1], ast.Lambda):
                        assert isinstance(hit[1], Fn)
                        self.runners.add((hit[1], _params(hit[1]).index(arg.id)))


def test_no_cli_output_inside_a_transaction() -> None:
    modules = _cli_modules()
    assert len(modules) > 10, modules
    problems = [
        f"{path.relative_to(SRC.parent)}: {problem}"
        for path in modules
        for problem in _Module(path).check()
    ]
    assert not problems, "commit first, then print:\n" + "\n".join(problems)


def test_the_guard_sees_output_in_a_transaction(tmp_path: Path) -> None:
    bad = tmp_path / "cli.py"
    bad.write_text(
        "def _run(config, work):\n"
        "    with store.begin() as conn:\n"
        "        return work(conn)\n"
        "def _show(conn):\n"
        "    typer.echo(conn)\n"
        "def _simple(config, fn):\n"
        "    def work(conn):\n"
        "        fn(conn)\n"
        "    _run(config, work)\n"
        "def ack():\n"
        "    def work(conn):\n"
        "        service.acknowledge(conn)\n"
        "        _show(conn)\n"
        "    _run(None, work)\n"
        "    _run(None, lambda conn: print_json(conn))\n"
        "    _simple(None, lambda conn: _show(conn))\n"
        "def fine():\n"
        "    def work(conn):\n"
        "        return windows.add_silence(conn)\n"
        "    print(_run(None, work))\n"
        "def direct():\n"
        "    with a() as store, store.begin() if w else store.connect() as conn:\n"
        "        print(conn)\n",
        encoding="utf-8",
    )
    problems = _Module(bad).check()
    assert len(problems) == 4, "\n".join(problems)
