"""What is secret, and masking it wherever a person or a file can see it.

The one place that decides, in three modules: this one walks the config schema (the `Secret`
markers, settings, probe configs); config/masking.py masks the strings a field may hold (URLs,
command lines, names that look secret); config/redactor.py masks free text (`Redactor`).
Pages (settings, probes, runbooks), `/healthz`, exports, evidence bundles, runbook output and
the probes table of the store all mask through them, so they cannot disagree.

The config schema says what is secret: fields carry a `Secret` marker in their type
(`password: SecretStr | None`, `url: CapabilityUrl`, `headers: SecretHeaders`). How much of
the value is hidden depends on the marker:

- `value`: the whole value (passwords, API keys, heartbeat tokens, request bodies);
- `capability`: a URL that is itself the credential (chat webhooks, the dead man's switch):
  only its scheme and host remain, `https://hooks.slack.com/••••••`;
- `headers`: every header value but a few harmless ones (`Accept`, `Content-Type` ...);
- `command`: a free-text command line; the values of options named like a secret
  (`--password=x`, `-p x`, `--token x`), credentials after `-u user:`, header values after `-H`;
- `names`: a free-form map (`runbooks.vars`, an `env:`), whose keys the schema cannot know;
  values whose name looks secret (`smtp_pass`, `PGPASSWORD`) are hidden.

Wherever a string holds a URL, its password (`postgresql://app:••••••@db/app`, parsed as the
database driver would, so a password containing `/` is hidden whole), every query value
(`?sig=••••••`, the keys stay) and its fragment are hidden, whatever the field. A value that came
from the environment or a file (`${DB_PASS}`, `password_file:`) is secret wherever it appears.

Free text that has no schema (copied config files, log lines, command output) goes through
`Redactor`: it masks every value the config taught it is secret, and, because nothing else
can, values assigned to keys named like a secret (`password=…`, `"api_token": "…"`).
Masking a little too much is accepted; leaking is not.
"""

from __future__ import annotations

import types
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, HttpUrl

from nachtwacht.config.masking import (
    MASK,
    MIN_LITERAL,
    SAFE_HEADERS,
    is_secret_key,
    mask_capability_url,
    mask_command,
    mask_urls_in,
)

How = Literal["value", "capability", "headers", "command", "names"]


@dataclass(frozen=True)
class Secret:
    """The marker on a config field that holds a secret; `how` says which part of it."""

    how: How = "value"


SecretStr = Annotated[str, Secret("value")]


CapabilityUrl = Annotated[HttpUrl, Secret("capability")]


SecretHeaders = Annotated[dict[str, str], Secret("headers")]


SecretCommand = Annotated[str | list[str], Secret("command")]


SecretNamed = Annotated[dict[str, str], Secret("names")]


def _marker(metadata: Iterable[Any]) -> Secret | None:
    return next((m for m in metadata if isinstance(m, Secret)), None)


def _field_type(field: Any) -> Any:
    """A pydantic field's type with its metadata (the Secret marker) put back on."""
    if field.metadata:
        return Annotated[(field.annotation, *field.metadata)]
    return field.annotation


def _kind_of(model: Any) -> tuple[Any, ...]:
    field = model.model_fields.get("kind")
    if field is None or get_origin(field.annotation) is not Literal:
        return ()
    return get_args(field.annotation)


def model_for(tp: Any, data: Any) -> type[BaseModel] | None:
    """The model that describes `data` at a place of type `tp`: through Annotated, Optional,
    and unions told apart by `kind`. None when the place is not a model."""
    seen = 0
    while seen < 20:  # Annotated[Union[Annotated[...]]] nests only so deep
        seen += 1
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            tp = _member(get_args(tp), data)
        else:
            break
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return _probe_kind(tp, data)
    return None


def _probe_kind(model: type[BaseModel], data: Any) -> type[BaseModel]:
    """A probe entry typed only as the base class: its kind's class, from the registry."""
    from nachtwacht.probes.base import ProbeConfig

    if model is ProbeConfig and isinstance(data, dict):
        from nachtwacht.probes.registry import kinds

        found = kinds().get(str(data.get("kind")))
        if found is not None:
            return found[0]
    return model


def _member(args: tuple[Any, ...], data: Any) -> Any:
    """Which member of a union `data` is: the model of its `kind`, else by its shape."""
    members = [a for a in args if a is not type(None)]
    if len(members) == 1:
        return members[0]
    if isinstance(data, dict) and "kind" in data:
        for member in members:
            model = model_for(member, None)
            if model is not None and data["kind"] in _kind_of(model):
                return member
    shape = {str: (str,), list: (list, tuple), dict: (dict,)}
    for member in members:
        base = member
        while get_origin(base) is Annotated:
            base = get_args(base)[0]
        origin = get_origin(base) or base
        if isinstance(data, str) and (
            origin is str or (isinstance(origin, type) and issubclass(origin, str | HttpUrl))
        ):
            return member
        for py, origins in shape.items():
            if isinstance(data, py) and origin in origins:
                return member
        if isinstance(data, dict) and isinstance(origin, type) and issubclass(origin, BaseModel):
            return member
    return Any


_UNKNOWN = object()


# per type, what walking it means; keyed by id, with the type kept so the id stays its own
_shapes: dict[int, tuple[Any, tuple[str, Any]]] = {}


_field_types: dict[type[BaseModel], dict[str, Any]] = {}


def _shape(tp: Any) -> tuple[str, Any]:
    """What a place of type `tp` holds: a secret (and how), a model, a list or map (and the
    type of its items), a union (its members), or something plain."""
    cached = _shapes.get(id(tp))
    if cached is not None and cached[0] is tp:
        return cached[1]
    origin = get_origin(tp)
    shape: tuple[str, Any]
    if origin is Annotated:
        base, *meta = get_args(tp)
        marker = _marker(meta)
        shape = ("secret", marker.how) if marker is not None else ("type", base)
    elif origin in (Union, types.UnionType):
        shape = ("union", get_args(tp))
    elif isinstance(tp, type) and issubclass(tp, BaseModel):
        shape = ("model", tp)
    elif origin in (list, tuple, set, frozenset):
        args = get_args(tp)
        shape = ("list", args[0] if args else Any)
    elif origin is dict:
        args = get_args(tp)
        shape = ("dict", args[1] if len(args) == 2 else Any)
    else:
        shape = ("plain", None)
    _shapes[id(tp)] = (tp, shape)
    return shape


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    found = _field_types.get(model)
    if found is None:
        found = {name: _field_type(f) for name, f in model.model_fields.items()}
        _field_types[model] = found
    return found


class _Masker:
    """One masking pass over data and its type; `found` collects every value it hid."""

    def __init__(self, also: Iterable[str] = ()) -> None:
        self.found: set[str] = set()
        # values known secret from elsewhere (the environment, a file): hidden in any string
        self.also = sorted({v for v in also if v and len(v) >= MIN_LITERAL}, key=len, reverse=True)

    def keep(self, value: str, name: str = "") -> None:
        """Remember a hidden value, to find it in free text later; not every hidden value is
        worth it: `?sslmode=require` hides `require` on the page, but a log keeps the word."""
        value = value.strip()
        if len(value) < MIN_LITERAL or MASK in value:
            return
        if name in ("", "password") or is_secret_key(name) or _tokenish(value):
            self.found.add(value)

    def keep_always(self, value: str) -> None:
        if len(value.strip()) >= MIN_LITERAL:
            self.found.add(value.strip())

    def walk(self, data: Any, tp: Any) -> Any:
        if data is None:
            return None
        shape, arg = _shape(tp)
        if shape == "plain" or (shape == "model" and not isinstance(data, dict)):
            return self.plain(data) if isinstance(data, str | dict | list | tuple) else data
        if shape == "secret":
            return self.secret(data, arg)
        if shape == "type":
            return self.walk(data, arg)
        if shape == "union":
            return self.walk(data, _member(arg, data))
        if shape == "model":
            return self.model(data, _probe_kind(arg, data))
        if shape == "list" and isinstance(data, list | tuple):
            return [self.walk(v, arg) for v in data]
        if shape == "dict" and isinstance(data, dict):
            return {k: self.walk(v, arg) for k, v in data.items()}
        return self.plain(data)

    def model(self, data: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
        fields = _fields(model)
        out: dict[str, Any] = {}
        for key, value in data.items():
            tp = fields.get(key, _UNKNOWN)
            if tp is _UNKNOWN:
                # a key the schema does not know (a stored config of an older version):
                # nothing says it is harmless
                out[key] = self.unknown(value)
            else:
                out[key] = self.walk(value, tp)
        return out

    def plain(self, data: Any) -> Any:
        """A value the schema calls harmless: only its URLs and known secrets are hidden.
        Untyped maps (`Any`) fall back to the names of their keys."""
        if isinstance(data, str):
            return self.known(mask_urls_in(data, self.keep))
        if isinstance(data, dict):
            return {k: self.names_value(str(k), v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.plain(v) for v in data]
        return data

    def names_value(self, key: str, value: Any) -> Any:
        if is_secret_key(key) and value not in (None, "", [], {}):
            return self.secret(value, "value")
        return self.plain(value)

    def unknown(self, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: self.unknown(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.unknown(v) for v in data]
        if isinstance(data, str) and data:
            self.keep_always(data)
            return MASK
        return data

    def secret(self, data: Any, how: How) -> Any:
        if how == "headers" and isinstance(data, dict):
            out = {}
            for name, value in data.items():
                if str(name).lower() in SAFE_HEADERS or value in (None, ""):
                    out[name] = self.plain(value)
                else:
                    out[name] = self.secret(value, "value")
            return out
        if how == "names" and isinstance(data, dict):
            return {k: self.names_value(str(k), v) for k, v in data.items()}
        if how == "command" and isinstance(data, str | list):
            return self.known(mask_command(data, self.keep))
        if how == "capability" and isinstance(data, str):
            return mask_capability_url(data, lambda v, _n: self.keep_always(v))
        # a whole value; a marked map or list hides each of its values
        if isinstance(data, dict):
            return {k: self.secret(v, "value") for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.secret(v, "value") for v in data]
        if data in (None, ""):
            return data
        text = str(data)
        self.keep_always(text)
        # a body of several lines may be quoted line by line elsewhere (a YAML block)
        for line in text.splitlines():
            if len(line.strip()) >= 8:
                self.keep_always(line)
        return MASK

    def known(self, text: Any) -> Any:
        if isinstance(text, list):
            return [self.known(t) for t in text]
        if not isinstance(text, str) or not self.also:
            return text
        for value in self.also:
            if value in text:
                text = text.replace(value, MASK)
        return text


def _tokenish(value: str) -> bool:
    """Looks generated rather than written: long, or letters and digits mixed."""
    if len(value) >= 16:
        return True
    return len(value) >= 8 and any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def shown(data: Any, tp: Any, also: Iterable[str] = ()) -> Any:
    """`data` (JSON-like, of type `tp`) as it may be shown: for showing, never for using."""
    return _Masker(also).walk(data, tp)


def secrets_of(data: Any, tp: Any, also: Iterable[str] = ()) -> set[str]:
    """The values `shown` hides, to find them again in free text."""
    masker = _Masker(also)
    masker.walk(data, tp)
    return masker.found | {v for v in also if v and len(v) >= MIN_LITERAL}


def model_shown(model: BaseModel) -> dict[str, Any]:
    """A config model (a probe, a channel) dumped with its secrets masked."""
    return shown(model.model_dump(mode="json"), type(model))


def probe_shown(config: dict[str, Any]) -> dict[str, Any]:
    """A probe's stored config (the `probes` table) masked by its kind's schema."""
    from nachtwacht.probes.base import ProbeConfig

    return shown(config, ProbeConfig)


# settings are frozen: what they hide is computed once per object (a copy gets its own)
_CACHE_ATTR = "_redaction"


def sourced(settings: Any) -> frozenset[str]:
    """Values the loader took from the environment or a file: secret wherever they appear."""
    return frozenset(getattr(settings, "_sourced", None) or ())


def _settings_pass(settings: Any) -> tuple[dict[str, Any], frozenset[str]]:
    private = getattr(settings, "__pydantic_private__", None)
    cached = private.get(_CACHE_ATTR) if isinstance(private, dict) else None
    if cached is not None and cached[0] == id(settings):
        return cached[1], cached[2]
    masker = _Masker(sourced(settings))
    masked = masker.walk(settings.model_dump(mode="json"), type(settings))
    found = frozenset(masker.found | {v for v in masker.also})
    if isinstance(private, dict):
        private[_CACHE_ATTR] = (id(settings), masked, found)
    return masked, found


def settings_shown(settings: Any) -> dict[str, Any]:
    """The whole config as the settings page shows it."""
    return _settings_pass(settings)[0]


def settings_secrets(settings: Any) -> frozenset[str]:
    """Every secret value of the config, to mask in free text (logs, copied files, output)."""
    return _settings_pass(settings)[1]


__all__ = [
    "CapabilityUrl",
    "Secret",
    "SecretCommand",
    "SecretHeaders",
    "SecretNamed",
    "SecretStr",
    "model_for",
    "model_shown",
    "probe_shown",
    "secrets_of",
    "settings_secrets",
    "settings_shown",
    "shown",
    "sourced",
]
