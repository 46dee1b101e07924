"""Finding and reading runbooks: the built-ins, then the user's folder (same name replaces).

Every mistake in a file is reported as `file:line: key: message`, like the config loader does
(ADR 0006): the YAML node tree keeps the line of every key, and a pydantic error location is
followed through it. A `{{ variable }}` that no setting, built-in or input defines is a mistake
of the file, caught when it is loaded rather than halfway through an emergency.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nachtwacht.config.explain import ConfigProblem
from nachtwacht.runbooks.models import (
    NAME_PATTERN,
    STEP_KINDS,
    Input,
    LoadedRunbook,
    Runbook,
    StepBase,
)

BUILTIN_DIR = Path(__file__).parent / "builtin"
VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_KEYED = re.compile(r"^[a-z_]+(\[\d+\]|\.[A-Za-z0-9_-]+)*: ")
# the fields of a step whose text may hold {{ variables }}
TEXT_FIELDS = ("command", "instruction", "subject", "body", "probe", "title")


class RunbookError(Exception):
    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def directories(settings: Any) -> list[Path]:
    """Where user runbooks are looked for: `runbooks.dir`, else <data_dir>/runbooks and
    ./runbooks (the first holding a name wins)."""
    cfg = settings.runbooks
    if cfg.dir is not None:
        return [Path(cfg.dir)]
    found = [settings.data_dir / "runbooks", Path("runbooks")]
    out: list[Path] = []
    for d in found:
        if d.absolute() not in [o.absolute() for o in out]:
            out.append(d)
    return out


def load_text(
    text: str, filename: str, name: str, variant: str, known: Iterable[str] | None = None
) -> LoadedRunbook:
    """Parse one runbook; RunbookError lists every problem with its line."""
    problems: list[ConfigProblem] = []
    if not re.match(NAME_PATTERN, name):
        problems.append(
            ConfigProblem(
                filename,
                None,
                "",
                f"the file name '{name}' must be lower case letters, "
                "digits, - and _ (it is the runbook's name)",
            )
        )
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise RunbookError([ConfigProblem(filename, line, "", f"invalid YAML: {reason}")]) from None
    if node is None or not isinstance(data, dict):  # no node: an empty document, data None
        raise RunbookError(
            [ConfigProblem(filename, 1, "", "a runbook is a mapping with title and steps")]
        )
    problems += _duplicates(node, filename)
    runbook = None
    try:
        runbook = Runbook.model_validate(data)
    except ValidationError as exc:
        problems += _problems(exc, node, filename)
    if runbook is not None and known is not None:
        problems += _unknown_variables(runbook, node, filename, set(known))
    if problems or runbook is None:
        raise RunbookError(sorted(problems, key=lambda p: p.line or 0))
    return LoadedRunbook(
        name=name,
        source="builtin",
        path=Path(filename),
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        runbook=runbook,
        variant=variant,
    )


def load_file(path: Path, variant: str, known: Iterable[str] | None = None) -> LoadedRunbook:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RunbookError(
            [ConfigProblem(str(path), None, "", f"cannot read: {exc.strerror}")]
        ) from None
    loaded = load_text(text, str(path), path.stem, variant, known)
    source = "builtin" if path.parent == BUILTIN_DIR else str(path)
    return loaded.model_copy(update={"source": source, "path": path})


def load_all(
    settings: Any, known: Iterable[str] | None = None
) -> tuple[dict[str, LoadedRunbook], list[ConfigProblem]]:
    """Every runbook by name, and the problems of the files that could not be loaded (a broken
    user file does not hide the others; nor does it fall back to the built-in it meant to
    replace: running the wrong procedure silently would be worse)."""
    variant = settings.runbooks.variant
    known = set(known) if known is not None else None
    files: dict[str, Path] = {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}
    for directory in reversed(directories(settings)):
        if directory.is_dir():
            for path in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
                files[path.stem] = path
    out: dict[str, LoadedRunbook] = {}
    problems: list[ConfigProblem] = []
    for name, path in sorted(files.items()):
        try:
            out[name] = load_file(path, variant, known)
        except RunbookError as exc:
            problems += exc.problems
    return out, problems


def references(step: StepBase) -> set[str]:
    """The variables a step's text uses."""
    names: set[str] = set()
    for field in TEXT_FIELDS:
        value = getattr(step, field, None)
        if isinstance(value, str):
            names.update(VARIABLE.findall(value))
    for value in (getattr(step, "env", None) or {}).values():
        names.update(VARIABLE.findall(value))
    if step.if_var:
        names.add(step.if_var.partition("=")[0].strip())
    return names


def _unknown_variables(
    runbook: Runbook, node: yaml.Node, filename: str, known: set[str]
) -> list[ConfigProblem]:
    problems = []
    allowed = known | set(runbook.inputs)
    for i, step in enumerate(runbook.steps):
        for name in sorted(references(step) - allowed):
            field = _field_using(step, name)
            key_node, path = _walk(node, ["steps", i, field])
            close = difflib.get_close_matches(name, sorted(allowed), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append(
                ConfigProblem(
                    filename,
                    _line(key_node),
                    _key(path),
                    f"unknown variable '{name}'; define it in runbooks.vars or as an input{hint}",
                )
            )
    return problems


def _field_using(step: StepBase, name: str) -> str:
    if step.if_var and step.if_var.partition("=")[0].strip() == name:
        return "if_var"
    for field in (*TEXT_FIELDS, "env"):
        value = getattr(step, field, None)
        text = " ".join(value.values()) if isinstance(value, dict) else value
        if isinstance(text, str) and name in VARIABLE.findall(text):
            return field
    return "id"


# -- errors with lines ---------------------------------------------------------------------------


def _duplicates(node: yaml.Node | None, filename: str, path: str = "") -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key, line = str(key_node.value), key_node.start_mark.line + 1
            child = f"{path}.{key}" if path else key
            if key in seen:
                problems.append(
                    ConfigProblem(
                        filename, line, child, f"duplicate key; already set on line {seen[key]}"
                    )
                )
            seen.setdefault(key, line)
            problems += _duplicates(value_node, filename, child)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems += _duplicates(item, filename, f"{path}[{index}]")
    return problems


def _problems(exc: ValidationError, root: yaml.Node, filename: str) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        kind = None
        if len(loc) >= 3 and loc[0] == "steps" and str(loc[2]) in STEP_KINDS:
            # pydantic puts the step's kind (the union's tag) in the location: `command` is
            # both a kind and a key, so take it out before following the path
            kind = str(loc.pop(2))
        message = error["msg"].removeprefix("Value error, ")
        if not loc and _KEYED.match(message):
            for line_text in message.splitlines():  # the runbook's own checks name their keys
                key_text, text = line_text.split(": ", 1)
                node, path = _walk(root, _parse_key(key_text))
                problems.append(ConfigProblem(filename, _line(node), _key(path), text))
            continue
        if error["type"] == "union_tag_invalid":
            loc.append("kind")
            tag = error.get("ctx", {}).get("tag", "")
            allowed = sorted(STEP_KINDS)
            message = f"unknown kind '{tag}'; allowed kinds: {', '.join(allowed)}"
            close = difflib.get_close_matches(str(tag), allowed, n=1)
            message += f"; did you mean '{close[0]}'?" if close else ""
        elif error["type"] == "union_tag_not_found":
            loc.append("kind")
            message = f"is required; one of: {', '.join(sorted(STEP_KINDS))}"
        node, path = _walk(root, loc)
        if error["type"] == "extra_forbidden":
            message = _unknown_key(kind, loc)
        elif error["type"] == "missing":
            message = "is required"
        problems.append(ConfigProblem(filename, _line(node), _key(path), message))
    return problems


def _unknown_key(kind: str | None, loc: list[Any]) -> str:
    """`unknown key; allowed here: ...` for the step kind or the runbook level it is in."""
    model: Any = Runbook
    if loc and loc[0] == "steps":
        model = STEP_KINDS[kind] if kind is not None else StepBase
    elif len(loc) >= 3 and loc[0] == "inputs":
        model = Input
    allowed = sorted(model.model_fields)
    message = f"unknown key; allowed here: {', '.join(allowed)}"
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    return f"{message}; did you mean '{close[0]}'?" if close else message


def _walk(root: yaml.Node | None, loc: list[Any]) -> tuple[yaml.Node | None, list[Any]]:
    """The deepest node of a pydantic location (and the key path that got there)."""
    node, deepest, path = root, root, []
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if found is None:
                path.append(part)
                return deepest, path
            path.append(part)
            deepest, node = found[0], found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            path.append(part)
            if part >= len(node.value):
                return deepest, path
            node = deepest = node.value[part]
        else:
            path.append(part)
            return deepest, path
    return deepest, path


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _parse_key(text: str) -> list[Any]:
    parts = text.replace("]", "").replace("[", ".").split(".")
    return [int(p) if p.isdigit() else p for p in parts if p]


def _key(path: list[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
