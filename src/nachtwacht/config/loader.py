"""Load nachtwacht.yaml and turn every validation error into `file:line: key: what is allowed`."""

from __future__ import annotations

import difflib
import gc
import os
import re
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ValidationError

from nachtwacht.config.schema import Settings, settings_model
from nachtwacht.config.yaml_reading import ConfigLoader
from nachtwacht.probes.base import ProbeConfig

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
        node, data = _load(text)
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
    # A section left empty (`probes:` with every entry commented out) means its default.
    data = {key: value for key, value in data.items() if value is not None}
    # PyYAML keeps the last of two equal keys without a word; a silently ignored probe setting
    # is the kind of mistake this loader exists to catch.
    problems = _duplicate_keys(node, filename)
    model = settings_model()
    sources = _Sources(filename, node, Path(filename).parent)
    data = sources.expand(data, [])
    sources.read_files(data, model, [])
    if sources.problems:
        # a value that could not be filled in would only fail validation in confusing words
        raise ConfigError(sorted(problems + sources.problems, key=lambda p: p.line or 0))
    try:
        settings = model.model_validate(data)
    except ValidationError as exc:
        problems += _problems(exc, node, filename, model)
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: p.line or 0))
    settings = _resolve_paths(settings, Path(filename))
    settings._sourced = frozenset(sources.values)
    return settings


# `${NAME}`, and `$${` for a literal `${`
_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
FILE_SUFFIX = "_file"


class _Sources:
    """Values taken from the environment (`${NAME}`) and from files (`password_file: PATH`),
    so the YAML itself need hold no secret. Every value taken is remembered in `values`: the
    redaction treats it as secret wherever it ends up."""

    def __init__(self, filename: str, node: yaml.Node | None, base: Path) -> None:
        self.filename = filename
        self.node = node
        self.base = base
        self.problems: list[Problem] = []
        self.values: set[str] = set()

    def _problem(self, path: list[Any], message: str) -> None:
        self.problems.append(Problem(self.filename, _line_at(self.node, path), _key(path), message))

    def expand(self, value: Any, path: list[Any]) -> Any:
        """`${NAME}` in every string value replaced by the variable's value."""
        if isinstance(value, dict):
            return {k: self.expand(v, [*path, k]) for k, v in value.items()}
        if isinstance(value, list):
            return [self.expand(v, [*path, i]) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value

        def one(m: re.Match[str]) -> str:
            if m[0] == "$${":
                return "${"
            name = m[1]
            if not _ENV_NAME.match(name):
                self._problem(
                    path, f"'${{{name}}}' is not an environment variable; write $${{ for a ${{"
                )
                return m[0]
            found = os.environ.get(name)
            if found is None:
                self._problem(path, f"environment variable {name} is not set")
                return m[0]
            self.values.add(found)
            return found

        return _REFERENCE.sub(one, value)

    def read_files(self, data: Any, tp: Any, path: list[Any]) -> None:
        """`foo_file: PATH` replaced by `foo: <the file's content>` wherever the schema has a
        `foo` (and no `foo_file`), and in maps of secrets (`runbooks.secret_vars`)."""
        from nachtwacht.config.redact import Secret, model_for

        if isinstance(data, list):
            item = _item_type(tp)
            for index, value in enumerate(data):
                self.read_files(value, item, [*path, index])
            return
        if not isinstance(data, dict):
            return
        model = model_for(tp, data)
        if model is not None:
            for key in [k for k in data if isinstance(k, str) and k.endswith(FILE_SUFFIX)]:
                target = key.removesuffix(FILE_SUFFIX)
                if key not in model.model_fields and target in model.model_fields:
                    self._take_file(data, key, target, path)
            for key, value in data.items():
                field = model.model_fields.get(key)
                if field is not None:
                    self.read_files(value, _with_metadata(field), [*path, key])
            return
        value_tp = _value_type(tp)
        if value_tp is None:
            return
        secret_values = any(
            isinstance(m, Secret) and m.how == "value"
            for m in getattr(value_tp, "__metadata__", ())
        )
        if secret_values:
            for key in [k for k in data if isinstance(k, str) and k.endswith(FILE_SUFFIX)]:
                self._take_file(data, key, key.removesuffix(FILE_SUFFIX), path)
        for key, value in data.items():
            self.read_files(value, value_tp, [*path, key])

    def _take_file(self, data: dict[Any, Any], key: str, target: str, path: list[Any]) -> None:
        where = [*path, key]
        if target in data:
            self._problem(where, f"set {target} or {key}, not both")
            return
        raw = data.pop(key)
        if not isinstance(raw, str) or not raw.strip():
            self._problem(where, "must be the path of a file")
            return
        file = Path(raw).expanduser()
        if not file.is_absolute():
            file = self.base / file  # like SQLite paths: relative to the config file
        try:
            content = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            self._problem(where, f"cannot read {file}: {reason}")
            return
        # `echo secret > file` adds a newline that is no part of the secret
        value = content.rstrip("\r\n")
        self.values.add(value)
        data[target] = value


def _with_metadata(field: Any) -> Any:
    if field.metadata:
        return Annotated[(field.annotation, *field.metadata)]
    return field.annotation


def _strip(tp: Any) -> Any:
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


def _item_type(tp: Any) -> Any:
    base = _strip(tp)
    if get_origin(base) in (list, tuple):
        args = get_args(base)
        return args[0] if args else Any
    return Any


def _value_type(tp: Any) -> Any:
    base = _strip(tp)
    if get_origin(base) is dict:
        args = get_args(base)
        return args[1] if len(args) == 2 else None
    return None


Warnings = list[tuple[tuple[str | int, ...], str]]  # (key path, message) pairs


def config_warnings(
    settings: Settings,
    path: str | os.PathLike[str] | None = None,
    *,
    checks: Sequence[Callable[[Settings], Warnings]],
) -> list[Problem]:
    """What loads but will not work as meant (a role nobody holds, nobody reachable).

    `config validate` prints these as warnings; the file is read again only for line numbers.
    `checks` are the domains' own (notify's reach); the caller passes them, so config, which
    every domain imports, imports none of them.
    """
    file = resolve_config_path(path)
    try:
        node, _ = _load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        node = None
    found = [
        Problem(str(file), _line_at(node, list(loc)), _key(list(loc)), message)
        for check in (*checks, link_warnings)
        for loc, message in check(settings)
    ]
    return sorted(found, key=lambda p: p.line or 0)


def link_warnings(settings: Settings) -> Warnings:
    """An acknowledge link on a loopback address works only on this machine, not on a phone."""
    url = settings.incidents.public_url
    host = (urlsplit(url).hostname or "").lower()
    if not settings.notify.channels or not (host == "localhost" or host.startswith("127.")):
        return []
    return [
        (
            ("incidents", "public_url"),
            f"acknowledge links in pages point at {url}, which only this machine reaches; "
            "set incidents.public_url to the address responders open from their phones",
        )
    ]


def _line_at(node: yaml.Node | None, loc: list[Any]) -> int | None:
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


def _load(text: str) -> tuple[yaml.Node | None, object]:
    """Parse once (with libyaml when present) into the node tree and the data built from it.

    The nodes carry the line numbers errors are reported with. A large file (10,000 probes)
    makes millions of short-lived objects: collecting during the parse tripled its time.
    """
    loader = ConfigLoader(text)  # `17:00` and `no` as written (config/yaml_reading.py)
    enabled = gc.isenabled()
    gc.disable()
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
        if enabled:
            gc.enable()
    return node, data


def _duplicate_keys(node: yaml.Node | None, filename: str, path: str = "") -> list[Problem]:
    problems: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            child = f"{path}.{key}" if path else key
            if key in seen and isinstance(key_node, yaml.ScalarNode):
                problems.append(
                    Problem(
                        filename, line, child, f"duplicate key; already set on line {seen[key]}"
                    )
                )
            else:
                seen[key] = line
            problems += _duplicate_keys(value_node, filename, child)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems += _duplicate_keys(item, filename, f"{path}[{index}]")
    return problems


def _resolve_paths(settings: Settings, file: Path) -> Settings:
    """Relative SQLite paths (the store's, and `sql` probes') are relative to the config file,
    so `status` and `serve` mean the same files from any working directory."""
    base = file.parent.resolve()
    store = settings.store.model_copy(update={"url": _absolute_sqlite(settings.store.url, base)})
    probes = [_resolve_probe_path(p, base) for p in settings.probes]
    return settings.model_copy(update={"store": store, "probes": probes})


def _resolve_probe_path(probe: ProbeConfig, base: Path) -> ProbeConfig:
    # config imports no probe kinds, so the `sql` probe's `url` is read by name
    url = getattr(probe, "url", None)
    if probe.kind == "sql" and isinstance(url, str):
        return probe.model_copy(update={"url": _absolute_sqlite(url, base)})
    return probe


def _absolute_sqlite(url: str, base: Path) -> str:
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return url
    rest = url[len(prefix) :]
    if not rest or rest.startswith("/") or rest.startswith(":memory:"):
        return url
    return prefix + (base / rest).as_posix()


# "probes[2].depends_on: ..." — a model-level check naming its own key
_KEYED = re.compile(r"^[a-z_]+(\[\d+\]|\.[A-Za-z0-9_-]+)*: ")


def _problems(
    exc: ValidationError, root: yaml.Node | None, filename: str, model: type[BaseModel]
) -> list[Problem]:
    problems: list[Problem] = []
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
        problems.append(Problem(filename, _line(node), _key(path), message))
    return problems


def _problem(
    root: yaml.Node | None, loc: list[Any], message: str, filename: str, model: type[BaseModel]
) -> Problem:
    node, path, _, _ = _walk(root, loc, model)
    return Problem(filename, _line(node), _key(path), message)


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
    base = _strip(tp)
    origin = get_origin(base)
    if origin in (list, tuple):
        return _models_in(_item_type(base))
    if origin is dict:
        return _models_in(_value_type(base))
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
        base = _strip(tp)
        origin = get_origin(base)
        if isinstance(base, type) and issubclass(base, BaseModel):
            field = base.model_fields.get(str(part))
            if field is None:
                return None
            tp = _with_metadata(field)
        elif origin in (list, tuple):
            tp = _item_type(base)
        elif origin is dict:
            tp = _value_type(base)
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


def _key(path: list[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
