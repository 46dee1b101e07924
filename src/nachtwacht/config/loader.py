"""Load nachtwacht.yaml and turn every validation error into `file:line: key: what is allowed`."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from nachtwacht.config.schema import Settings, settings_model

DEFAULT_PATH = "nachtwacht.yaml"
ENV_VAR = "NACHTWACHT_CONFIG"


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """A config file that cannot be used; `problems` holds one entry per mistake."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def resolve_config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    return Path(explicit or os.environ.get(ENV_VAR) or DEFAULT_PATH)


def load_config(path: str | os.PathLike[str] | None = None) -> Settings:
    file = resolve_config_path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [Problem(str(file), None, "", "no such file; create one with `nachtwacht init`")]
        ) from None
    except OSError as exc:
        raise ConfigError([Problem(str(file), None, "", f"cannot read: {exc.strerror}")]) from None
    return parse_config(text, str(file))


def parse_config(text: str, filename: str = DEFAULT_PATH) -> Settings:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(filename, line, "", f"invalid YAML: {reason}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [Problem(filename, 1, "", "the file must be a mapping of keys such as probes:")]
        )
    model = settings_model()
    try:
        settings = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, node, filename, model)) from None
    return _resolve_paths(settings, Path(filename))


def _resolve_paths(settings: Settings, file: Path) -> Settings:
    """A relative SQLite path is relative to the config file, so `status` works from any cwd."""
    url = settings.store.url
    prefix = "sqlite:///"
    rest = url[len(prefix) :]
    if url.startswith(prefix) and rest and not rest.startswith("/") and rest != ":memory:":
        absolute = (file.parent.resolve() / rest).as_posix()
        store = settings.store.model_copy(update={"url": prefix + absolute})
        return settings.model_copy(update={"store": store})
    return settings


def _problems(
    exc: ValidationError, root: yaml.Node | None, filename: str, model: type[BaseModel]
) -> list[Problem]:
    problems: list[Problem] = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if not loc and ": " in message and message.split(": ", 1)[0].startswith("probes["):
            # model-level checks (duplicate names, depends_on) name their own key
            key_text, message = message.split(": ", 1)
            loc = _parse_key(key_text)
        node, path, model_at = _walk(root, loc, model)
        if error["type"] == "extra_forbidden":
            message = _unknown_key(path[-1] if path else "", model_at)
        elif error["type"] == "missing":
            message = "is required"
        problems.append(
            Problem(
                filename,
                node.start_mark.line + 1 if node is not None else None,
                _key(path),
                message,
            )
        )
    return problems


def _walk(
    root: yaml.Node | None, loc: list[Any], model: type[BaseModel] | None
) -> tuple[yaml.Node | None, list[Any], type[BaseModel] | None]:
    """Follow a pydantic error location through the YAML nodes, skipping union tags.

    Returns the deepest node found, the key path, and the model holding the last key.
    """
    node, path, deepest = root, [], root
    parent_model: type[BaseModel] | None = model
    container: type[BaseModel] | None = model
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = None
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    found = (key_node, value_node)
                    break
            if found is None:
                kind = next((v.value for k, v in node.value if k.value == "kind"), None)
                if kind is not None and part == kind:
                    parent_model = _kind_model(kind) or parent_model
                    continue  # the discriminator tag pydantic adds to the location
                path.append(part)
                container = parent_model
                break
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
                break
        else:
            path.append(part)
            if node is not None:
                deepest = node
            break
    return deepest, path, container


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


def _key(path: list[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
