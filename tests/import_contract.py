"""The import contract between nachtwacht's packages, checked from the source with `ast`.

docs/decisions/0016-a-domain-graph-without-cycles.md has the rules and why. In short, every
package below `nachtwacht` is one of:

- foundation (clock, durations, store, config, problems, tailer, wake): imports only
  foundation and the domains' `models` modules (config composes them into one schema), plus
  the probe-kind registry;
- a composition root (web, cli, engine): wires the domains and may import anything;
- a domain (everything else). Its doors (api, pages, cli, ingest_api, engine, deps) adapt it
  to HTTP, HTML, the command line and the engine; the rest is its core.

Rule 1: a domain's core imports no composition root and no door (TYPE_CHECKING aside).
Rule 2: a `models` module imports only foundation and other `models` modules.
Rule 3: domains, drawn from their core modules' imports of other domains' core modules, form
        no cycle.
Rule 4: a door imports no other domain's door, and of the composition roots only the shared
        infrastructure in DOOR_SHARED; only the roots proper (ROOTS) mount the doors.

Run `python tests/import_contract.py` from the repository root to print the domain graph.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

FOUNDATION = frozenset({"clock", "durations", "store", "config", "problems", "tailer", "wake"})
COMPOSITION = frozenset({"web", "cli", "engine", "__main__"})
DOOR_NAMES = frozenset({"api", "pages", "cli", "ingest_api", "engine", "deps"})
# What a door may use of the composition roots and of other domains' doors: the shared web
# and CLI infrastructure (errors, pagination, rendering, the CSP of a page, the refusal
# counter of the ingestion doors), the auth dependencies, and the Runtime a door is handed
# (engine.runtime, and web.state's AppState, the typed way to it).
DOOR_SHARED = frozenset(
    {
        "web.errors",
        "web.pagination",
        "web.render",
        "web.headers",
        "web.refused",
        "web.state",
        "cli.common",
        "auth.deps",
        "engine.runtime",
    }
)
# The roots that mount every domain's doors: the app, the command, the engine's runtime.
ROOTS = frozenset({"web.app", "cli.main", "engine.runtime", "__main__"})
# The probe kinds are plug-ins, each with its own config class, and config types `probes:` as
# the union of what this registry finds: the one place foundation reaches into a domain.
CONFIG_PLUGINS = frozenset({"probes.base", "probes.registry"})


@dataclass(frozen=True)
class Edge:
    source: str  # dotted module path below the package, e.g. "notify.sender"
    target: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line})"


@dataclass
class Report:
    violations: list[str] = field(default_factory=list)
    # domain -> domain -> the module-level edges behind that arrow
    domain_edges: dict[str, dict[str, list[Edge]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )


def top(module: str) -> str:
    return module.split(".")[0]


def kind(module: str) -> str:
    """foundation, composition, door, models or core."""
    head = top(module)
    if module == "" or head in FOUNDATION:
        return "foundation"
    if head in COMPOSITION:
        return "composition"
    leaf = module.rpartition(".")[2]
    if module.count(".") == 1 and leaf in DOOR_NAMES:
        return "door"
    if leaf == "models":
        return "models"
    return "core"


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Nodes under `if TYPE_CHECKING:`: such imports never run, so they cannot cycle."""
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                hidden.update(id(n) for n in ast.walk(child))
    return hidden


def _imports(
    tree: ast.AST, module: str, is_package: bool, package: str, modules: set[str]
) -> list[tuple[str, int]]:
    """Every in-package module imported at run time, at any depth (a lazy import counts)."""
    hidden = _type_checking_only(tree)
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if module else []
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join([package, *base])
                source = f"{stem}.{node.module}" if node.module else stem
            else:
                source = node.module or ""
            for alias in node.names:
                # `from pkg import sub` imports the submodule when there is one
                sub = f"{source}.{alias.name}"
                names.append(sub if sub.removeprefix(package + ".") in modules else source)
        for name in names:
            if not name.startswith(package + "."):
                continue
            target = name.removeprefix(package + ".")
            while target and target not in modules:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target:
                found.append((target, node.lineno))
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first, in name order, so it is stable)."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def _judge(edge: Edge) -> str | None:
    """The rule (1, 2, 4 or foundation's) this import breaks, or None."""
    src, dst = kind(edge.source), kind(edge.target)
    same = top(edge.source) == top(edge.target)
    shared = edge.target in DOOR_SHARED
    if src == "models" and dst not in ("foundation", "models"):
        return f"rule 2: a models module imports beyond foundation and models: {edge}"
    if src == "core" and dst in ("composition", "door"):
        return f"rule 1: a domain's core imports a {dst} module: {edge}"
    if src == "door" and dst in ("composition", "door") and not same and not shared:
        what = "another domain's door" if dst == "door" else "a composition root"
        return f"rule 4: a door imports {what}: {edge}"
    if src == "composition" and dst == "door" and edge.source not in ROOTS and not shared:
        return f"rule 4: only {', '.join(sorted(ROOTS))} mount doors: {edge}"
    plugin = edge.target in CONFIG_PLUGINS
    if src == "foundation" and dst not in ("foundation", "models") and not plugin:
        return f"foundation imports a {dst} module: {edge}"
    return None


def check(root: Path, package: str = "nachtwacht") -> Report:
    """Judge every import of the package at `root` (its directory); see the module docstring."""
    report = Report()
    files = {_module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for target, line in _imports(tree, module, path.name == "__init__.py", package, modules):
            edge = Edge(module, target, line)
            if (broken := _judge(edge)) is not None:
                report.violations.append(broken)
            elif kind(module) == "core" and kind(target) == "core" and top(module) != top(target):
                report.domain_edges[top(module)][top(target)].append(edge)
    graph = {src: set(dsts) for src, dsts in report.domain_edges.items()}
    cycle = find_cycle(graph)
    if cycle:
        lines = [f"rule 3: domains import each other in a cycle: {' -> '.join(cycle)}"]
        for a, b in zip(cycle, cycle[1:], strict=False):
            lines += [f"    {edge}" for edge in report.domain_edges[a][b]]
        report.violations.append("\n".join(lines))
    return report


if __name__ == "__main__":
    result = check(Path(__file__).resolve().parents[1] / "src" / "nachtwacht")
    for domain in sorted(result.domain_edges):
        print(domain, "->", ", ".join(sorted(result.domain_edges[domain])))
    print()
    print("\n".join(result.violations) or "the import contract holds")
    sys.exit(1 if result.violations else 0)
