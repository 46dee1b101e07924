"""A config mistake as one `file:line: key: message` line.

Pydantic's validation errors and the YAML node tree go in; out come lines that point at the key
as the file writes it, with what is allowed there and a "did you mean" for a near miss.
"""

from __future__ import annotations

import difflib
import re
import types
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError


@dataclass(frozen=True)
class ConfigProblem:
    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


def line_at(node: yaml.Node | None, loc: list[Any]) -> int | None:
    """The line of the key at `loc`, or None when the file does not write it (a default)."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if pair is None:
                return None
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return None
    return line


def duplicate_keys(node: yaml.Node | None, filename: str, path: str = "") -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            child = f"{path}.{key}" if path else key
            if key in seen and isinstance(key_node, yaml.ScalarNode):
                problems.append(
                    ConfigProblem(
                        filename, line, child, f"duplicate key; already set on line {seen[key]}"
                    )
                )
            else:
                seen[key] = line
            problems += duplicate_keys(value_node, filename, child)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems += duplicate_keys(item, filename, f"{path}[{index}]")
    return problems


# "probes[2].depends_on: ..." — a model-level check naming its own key
_KEYED = re.compile(r"^[a-z_]+(\[\d+\]|\.[A-Za-z0-9_-]+)*: ")


def validation_problems(
    exc: ValidationError, root: yaml.Node | None, filename: str, model: type[BaseModel]
) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if not loc and _KEYED.match(message):
            # model-level checks (duplicate names, depends_on) name their own key, one per line
            for line_text in message.splitlines():
                key_text, text = line_text.split(": ", 1)
                problems.append(_problem(root, _parse_key(key_text), text, filename, model))
            continue
        if error["type"] == "union_tag_invalid":
            # the kinds of the union at hand: a notify channel's, not a probe's
            allowed = _tags(_type_at(model, loc)) or _kind_names()
            loc.append("kind")
            message = _unknown_kind(error.get("ctx", {}).get("tag", ""), allowed)
        elif error["type"] == "union_tag_not_found":
            allowed = _tags(_type_at(model, loc)) or _kind_names()
            loc.append("kind")
            message = f"is required; one of: {', '.join(sorted(allowed))}"
        elif error["type"] == "value_error":
            # `interval must be at least 1s` from a model validator: point at `interval`
            _, _, _, at_model = _walk(root, loc, model)
            first, _, rest = message.partition(" ")
            field = first.strip("`'")
            if at_model is not None and rest and field in at_model.model_fields:
                loc.append(field)
                message = rest
        node, path, container, _ = _walk(root, loc, model)
        if error["type"] == "extra_forbidden":
            message = _unknown_key(path[-1] if path else "", container)
        elif error["type"] == "missing":
            message = "is required"
        elif error["type"] == "string_type" and isinstance(error.get("input"), int | float | date):
            # `phone: +31612345678`, `name: 2026-01-01`: YAML made a number or a date of it
            message += (
                "; put it in quotes: unquoted, YAML reads it as a number, a date or a boolean"
            )
        elif error["type"] == "literal_error" and error.get("input") == "":
            # `op: >` is YAML's folded-text marker, so the value arrives empty
            message += (
                '; quote it (op: ">"): unquoted, YAML reads > and | as the start of a text block'
            )
        problems.append(ConfigProblem(filename, _line(node), dotted_key(path), message))
    return problems


def _problem(
    root: yaml.Node | None, loc: list[Any], message: str, filename: str, model: type[BaseModel]
) -> ConfigProblem:
    node, path, _, _ = _walk(root, loc, model)
    return ConfigProblem(filename, _line(node), dotted_key(path), message)


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _walk(
    root: yaml.Node | None, loc: list[Any], model: type[BaseModel] | None
) -> tuple[yaml.Node | None, list[Any], type[BaseModel] | None, type[BaseModel] | None]:
    """Follow a pydantic error location through the YAML nodes, skipping union tags.

    Returns the deepest node found, the key path, the model holding the last key, and the
    model of the value at the end of the path (None when not a model).
    """
    node, path, deepest = root, [], root
    parent_model: type[BaseModel] | None = model
    container: type[BaseModel] | None = model
    for index, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            found = None
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    found = (key_node, value_node)
                    break
            if found is None:
                kind = next((v.value for k, v in node.value if k.value == "kind"), None)
                if kind is not None and part == kind:
                    tagged = _tagged(_type_at(model, loc[:index]), kind)
                    parent_model = tagged or _kind_model(kind) or parent_model
                    continue  # the discriminator tag pydantic adds to the location
                path.append(part)
                container = parent_model
                return deepest, path, container, None
            path.append(part)
            deepest = found[0]
            node = found[1]
            container = parent_model
            parent_model = _field_model(parent_model, str(part))
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            path.append(part)
            if part < len(node.value):
                node = node.value[part]
                deepest = node
            else:
                return deepest, path, container, None
        else:
            path.append(part)
            if node is not None:
                deepest = node
            return deepest, path, container, None
    return deepest, path, container, parent_model


def _field_model(model: type[BaseModel] | None, name: str) -> type[BaseModel] | None:
    if model is None or name not in model.model_fields:
        return None
    annotation = model.model_fields[name].annotation
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _kind_model(kind: str) -> type[BaseModel] | None:
    from nachtwacht.probes.registry import kinds

    entry = kinds().get(kind)
    return entry[0] if entry else None


def _kind_names() -> list[str]:
    from nachtwacht.probes.registry import kinds

    return list(kinds())


def _models_in(tp: Any) -> list[type[BaseModel]]:
    """The models a declared type holds: a union's members, a list's or a dict's values."""
    base = strip_type(tp)
    origin = get_origin(base)
    if origin in (list, tuple):
        return _models_in(item_type(base))
    if origin is dict:
        return _models_in(value_type(base))
    if origin in (Union, types.UnionType):
        return [m for arg in get_args(base) for m in _models_in(arg)]
    return [base] if isinstance(base, type) and issubclass(base, BaseModel) else []


def _kinds_of(member: type[BaseModel]) -> tuple[Any, ...]:
    field = member.model_fields.get("kind")
    return get_args(field.annotation) if field is not None else ()


def _tagged(tp: Any, tag: Any) -> type[BaseModel] | None:
    """The member of the union `tp` whose `kind` is `tag` (a channel's kind: slack, email)."""
    return next((m for m in _models_in(tp) if tag in _kinds_of(m)), None)


def _tags(tp: Any) -> list[str]:
    return [str(k) for m in _models_in(tp) for k in _kinds_of(m)]


def _type_at(model: type[BaseModel] | None, loc: list[Any]) -> Any:
    """The declared type of the value at a pydantic error location (tags included)."""
    tp: Any = model
    for part in loc:
        base = strip_type(tp)
        origin = get_origin(base)
        if isinstance(base, type) and issubclass(base, BaseModel):
            field = base.model_fields.get(str(part))
            if field is None:
                return None
            tp = with_metadata(field)
        elif origin in (list, tuple):
            tp = item_type(base)
        elif origin is dict:
            tp = value_type(base)
        else:
            tp = _tagged(base, part)
            if tp is None:
                return None
    return tp


def _unknown_kind(tag: Any, kinds: list[str]) -> str:
    allowed = sorted(kinds)
    message = f"unknown kind '{tag}'; allowed kinds: {', '.join(allowed)}"
    close = difflib.get_close_matches(str(tag), allowed, n=1)
    return f"{message}; did you mean '{close[0]}'?" if close else message


def _unknown_key(name: Any, model: type[BaseModel] | None) -> str:
    if model is None:
        return "unknown key"
    allowed = sorted(model.model_fields)
    message = f"unknown key; allowed here: {', '.join(allowed)}"
    close = difflib.get_close_matches(str(name), allowed, n=1)
    return f"{message}; did you mean '{close[0]}'?" if close else message


def _parse_key(text: str) -> list[Any]:
    out: list[Any] = []
    for part in text.replace("]", "").replace("[", ".").split("."):
        if part:
            out.append(int(part) if part.isdigit() else part)
    return out


def dotted_key(path: list[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# -- declared types (shared with loader.py's secret sources) ---------------------------------


def with_metadata(field: Any) -> Any:
    if field.metadata:
        return Annotated[(field.annotation, *field.metadata)]
    return field.annotation


def strip_type(tp: Any) -> Any:
    """The type without Annotated and Optional around it."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def item_type(tp: Any) -> Any:
    base = strip_type(tp)
    if get_origin(base) in (list, tuple):
        args = get_args(base)
        return args[0] if args else Any
    return Any


def value_type(tp: Any) -> Any:
    base = strip_type(tp)
    if get_origin(base) is dict:
        args = get_args(base)
        return args[1] if len(args) == 2 else None
    return None


Warnings = list[tuple[tuple[str | int, ...], str]]  # (key path, message) pairs
