"""Load nachtwacht.yaml: read it, fill in `${NAME}` and `*_file` values, validate, resolve paths.

What a mistake reads like (`file:line: key: what is allowed`) is config/explain.py.
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from nachtwacht.config.explain import (
    ConfigProblem,
    dotted_key,
    duplicate_keys,
    item_type,
    line_at,
    validation_problems,
    value_type,
    with_metadata,
)
from nachtwacht.config.schema import Settings, settings_model
from nachtwacht.config.yaml_reading import ConfigLoader
from nachtwacht.probes.base import ProbeConfig

DEFAULT_PATH = "nachtwacht.yaml"
ENV_VAR = "NACHTWACHT_CONFIG"


class ConfigError(Exception):
    """A config file that cannot be used; `problems` holds one entry per mistake."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
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
            [ConfigProblem(str(file), None, "", "no such file; create one with `nachtwacht init`")]
        ) from None
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem(str(file), None, "", f"cannot read: {exc.strerror}")]
        ) from None
    return parse_config(text, str(file))


def parse_config(text: str, filename: str = DEFAULT_PATH) -> Settings:
    try:
        node, data = _load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigProblem(filename, line, "", f"invalid YAML: {reason}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [ConfigProblem(filename, 1, "", "the file must be a mapping of keys such as probes:")]
        )
    # A section left empty (`probes:` with every entry commented out) means its default.
    data = {key: value for key, value in data.items() if value is not None}
    # PyYAML keeps the last of two equal keys without a word; a silently ignored probe setting
    # is the kind of mistake this loader exists to catch.
    problems = duplicate_keys(node, filename)
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
        problems += validation_problems(exc, node, filename, model)
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
        self.problems: list[ConfigProblem] = []
        self.values: set[str] = set()

    def _problem(self, path: list[Any], message: str) -> None:
        self.problems.append(
            ConfigProblem(self.filename, line_at(self.node, path), dotted_key(path), message)
        )

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
            item = item_type(tp)
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
                    self.read_files(value, with_metadata(field), [*path, key])
            return
        value_tp = value_type(tp)
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


Warnings = list[tuple[tuple[str | int, ...], str]]  # (key path, message) pairs


def config_warnings(
    settings: Settings,
    path: str | os.PathLike[str] | None = None,
    *,
    checks: Sequence[Callable[[Settings], Warnings]],
) -> list[ConfigProblem]:
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
        ConfigProblem(str(file), line_at(node, list(loc)), dotted_key(list(loc)), message)
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
