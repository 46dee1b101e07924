"""What is secret, and masking it wherever a person or a file can see it.

The one place that decides. Pages (settings, probes, runbooks), `/healthz`, exports, evidence
bundles, runbook output and the probes table of the store all mask through this module, so
they cannot disagree.

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

import re
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, HttpUrl

MASK = "••••••"
# values this short are not worth hunting for elsewhere: "1", "on", "yes" would mask half a log
MIN_LITERAL = 4

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

# header values that say how to talk, never who is talking; every other value is hidden
SAFE_HEADERS = frozenset({"accept", "accept-language", "content-type", "user-agent"})

# Names are a word list, used only where there is no schema: keys of free-form maps, free
# text, command lines. A name is secret when its last word (split at _ - . and camelCase) is
# one of these, or it ends in one of SECRET_SUFFIXES (`PGPASSWORD`, `mysqlpwd`); so
# `smtp_pass` and `X-Api-Key` are, `min_password_length` and `keyboard` are not.
SECRET_WORDS = frozenset(
    {"password", "passwd", "pwd", "pass", "passphrase", "token", "secret", "key", "apikey"}
    | {"credential", "credentials", "authorization", "auth", "cookie", "dsn", "sig"}
    | {"signature"}
)
SECRET_SUFFIXES = ("password", "passwd", "pwd", "secret", "token", "apikey", "passphrase")
# short command-line options that take a password: mysql's -p. A port after ssh -p is
# hidden too; that is the price of a word list.
SECRET_SHORT_OPTIONS = frozenset({"p"})
HEADER_OPTIONS = frozenset({"-H", "--header"})
USER_OPTIONS = frozenset({"-u", "--user", "--proxy-user"})

_SCHEME = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*):(?://)", re.I)
# a URL in free text ends at white space or a quote
_URL_IN_TEXT = re.compile(r"\b[a-z][a-z0-9+.\-]*://[^\s<>\"'`]+", re.I)
# SQLAlchemy's reading of `user:password@`: the password runs to the first @, `/` included
_DRIVER_USERINFO = re.compile(r"(?P<user>[^:/@]*):(?P<password>[^@]*)@")
# schemes parsed by the RFC (userinfo ends at the first / ? #); every other scheme is also
# read the way SQLAlchemy reads database URLs, and the wider of the two readings is hidden
_RFC_SCHEMES = frozenset({"http", "https", "ws", "wss", "ftp", "ftps"})


# ---------------------------------------------------------------------------- names


def is_secret_key(key: str) -> bool:
    """`db_password`, `apiToken`, `X-Api-Key`, `smtp_pass`, `PGPASSWORD`: yes;
    `password_reset`, `min_password_length`, `keyboard`: no."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key.strip("\"'-"))
    words = [w for w in re.split(r"[_\-.\s]+", spaced.lower()) if w]
    if not words:
        return False
    return words[-1] in SECRET_WORDS or words[-1].endswith(SECRET_SUFFIXES)


# ---------------------------------------------------------------------------- URLs


def _password_span(url: str, start: int, scheme: str) -> tuple[int, int] | None:
    """Where the password of the userinfo after `scheme://` (at `start`) lies, if any."""
    spans: list[tuple[int, int]] = []
    netloc_end = len(url)
    for stop in "/?#":
        found = url.find(stop, start)
        if found != -1:
            netloc_end = min(netloc_end, found)
    at = url.rfind("@", start, netloc_end)
    if at != -1:
        colon = url.find(":", start, at)
        if colon != -1:
            spans.append((colon + 1, at))
    if scheme.lower() not in _RFC_SCHEMES:
        m = _DRIVER_USERINFO.match(url, start)
        if m:
            spans.append(m.span("password"))
    if not spans:
        return None
    return min(s for s, _ in spans), max(e for _, e in spans)


def _mask_query(query: str, keep: Callable[[str, str], None]) -> str:
    parts = []
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        if not eq:
            # a bare `?token` is a value without a name
            if part:
                keep(part, "query")
                parts.append(MASK)
            else:
                parts.append(part)
        elif value:
            keep(value, name)
            parts.append(f"{name}={MASK}")
        else:
            parts.append(part)
    return "&".join(parts)


def mask_url(url: str, keep: Callable[[str, str], None] | None = None) -> str:
    """`scheme://user:••••••@host/path?key=••••••#••••••`: the password, every query value and
    the fragment hidden. Not a URL: returned as it is. `keep(value, name)` hears each
    hidden value (with its query key, if any)."""
    m = _SCHEME.match(url)
    if m is None:
        return url
    keep = keep or _ignore
    start = m.end()
    out = url[:start]
    span = _password_span(url, start, m["scheme"])
    rest_at = start
    if span is not None:
        begin, end = span
        password = url[begin:end]
        if password:
            keep(password, "password")
            out += url[start:begin] + MASK
            rest_at = end
    rest = url[rest_at:]
    # the query starts after the host (and any password)
    rest, hash_, fragment = rest.partition("#")
    rest, q, query = rest.partition("?")
    out += rest
    if q:
        out += "?" + _mask_query(query, keep)
    if hash_:
        if fragment:
            keep(fragment, "fragment")
        out += "#" + (MASK if fragment else "")
    return out


def mask_capability_url(url: str, keep: Callable[[str, str], None] | None = None) -> str:
    """A URL that is a credential as a whole (whoever has it can post, or ping): only the
    scheme and host (with port) remain, `https://hooks.slack.com/••••••`."""
    m = _SCHEME.match(url)
    if m is None:
        if url:
            (keep or _ignore)(url, "")
        return MASK if url else url
    keep = keep or _ignore
    start = m.end()
    netloc_end = len(url)
    for stop in "/?#":
        found = url.find(stop, start)
        if found != -1:
            netloc_end = min(netloc_end, found)
    span = _password_span(url, start, m["scheme"])
    host_at = start
    if span is not None:
        host_at = max(host_at, url.find("@", span[1]) + 1)
    at = url.rfind("@", host_at, netloc_end)
    host_at = at + 1 if at != -1 else host_at
    host = url[host_at : max(netloc_end, host_at)]
    secret = url[host_at + len(host) :]
    if span is not None and span[0] < span[1]:
        keep(url[span[0] : span[1]], "password")
    if secret.strip("/"):
        keep(secret, "")
        return f"{m['scheme']}://{host}/{MASK}"
    return f"{m['scheme']}://{host}{secret}"


def mask_urls_in(text: str, keep: Callable[[str, str], None] | None = None) -> str:
    """Every URL in free text masked as `mask_url` does."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: mask_url(m[0], keep), text)


def _ignore(_value: str, _name: str) -> None:
    return None


# ---------------------------------------------------------------------------- commands

# a shell word: quoted parts and plain characters, so `--password="a b"` is one word
_WORD = re.compile(r"""(?:"(?:[^"\\]|\\.)*"|'[^']*'|[^\s"'])+""")


def _unquote(word: str) -> str:
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "\"'":
        return word[1:-1]
    return word


def _masked_word(word: str) -> str:
    """A value replaced by the mask, its quotes kept so the line still reads as a command."""
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "\"'":
        return f"{word[0]}{MASK}{word[0]}"
    return MASK


def _secret_option(word: str) -> bool:
    """`--password`, `-password`, `--api-token`, `-p`."""
    if not word.startswith("-"):
        return False
    name = word.lstrip("-")
    if len(name) == 1:
        return name in SECRET_SHORT_OPTIONS
    return is_secret_key(name)


def _mask_words(words: list[str], keep: Callable[[str, str], None]) -> list[str]:
    """Command-line words with the secret ones masked (see the module's docstring)."""
    out: list[str] = []
    pending: str | None = None  # the option whose value the next word is
    for word in words:
        if pending is not None:
            out.append(_mask_option_value(pending, word, keep))
            pending = None
            continue
        name, eq, value = word.partition("=")
        if word.startswith("-") and eq:
            if name in HEADER_OPTIONS or name in USER_OPTIONS:
                out.append(f"{name}={_mask_option_value(name, value, keep)}")
            elif _secret_option(name) and value:
                keep(_unquote(value), "password")
                out.append(f"{name}={_masked_word(value)}")
            else:
                out.append(mask_urls_in(word, keep))
        elif word.startswith("-p") and not word.startswith("--") and len(word) > 2:
            # mysql -pSECRET: the password glued to the option; `-password VALUE` (one dash)
            # hides the next word too
            keep(word[2:], "password")
            out.append(f"-p{MASK}")
            if word[1:].lower() in SECRET_WORDS:
                pending = word
        elif word in HEADER_OPTIONS or word in USER_OPTIONS or _secret_option(word):
            pending = word
            out.append(word)
        elif eq and not word.startswith("-") and is_secret_key(name) and value:
            # PGPASSWORD=x in front of a command
            keep(_unquote(value), name)
            out.append(f"{name}={_masked_word(value)}")
        else:
            out.append(mask_urls_in(word, keep))
    return out


def _mask_option_value(option: str, word: str, keep: Callable[[str, str], None]) -> str:
    inner = _unquote(word)
    quote = word[0] if inner != word else ""
    if option.split("=")[0] in HEADER_OPTIONS:
        name, colon, value = inner.partition(":")
        if not colon or name.strip().lower() in SAFE_HEADERS or not value.strip():
            return word
        keep(value.strip(), name)
        return f"{quote}{name}: {MASK}{quote}"
    if option.split("=")[0] in USER_OPTIONS:
        user, colon, password = inner.partition(":")
        if not colon or not password:
            return word
        keep(password, "password")
        return f"{quote}{user}:{MASK}{quote}"
    if inner:
        keep(inner, "password")
    return _masked_word(word)


def mask_command(command: str | list[str], keep: Callable[[str, str], None] | None = None) -> Any:
    """A command (a line or its words) with option values named like secrets masked.

    A command is free text: the schema cannot say which of its words is a password, so this is
    the one place where names decide (`--password=`, `--api-token`, `-p`, `PGPASSWORD=`).
    """
    keep = keep or _ignore
    if isinstance(command, list):
        return _mask_words([str(w) for w in command], keep)
    words = [(m.start(), m.end()) for m in _WORD.finditer(command)]
    masked = _mask_words([command[s:e] for s, e in words], keep)
    out, last = [], 0
    for (s, e), new in zip(words, masked, strict=True):
        out.append(command[last:s])
        out.append(new)
        last = e
    out.append(command[last:])
    return "".join(out)


# ---------------------------------------------------------------------------- the schema walk


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


# ---------------------------------------------------------------------------- settings

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


# ---------------------------------------------------------------------------- free text

# key, separator, value: `key=value`, `key: value`, `"key": "value"`, `--key=value`. The value
# is a quoted string or the rest of the line up to a delimiter that ends a value in JSON,
# query strings and command lines.
_ASSIGNMENT = re.compile(
    r"""(?P<key>["']?(?:--?)?[A-Za-z_][\w.\-]*["']?)(?P<sep>[ \t]*[:=][ \t]*)"""
    r"""(?P<value>"(?:[^"\\\n]|\\.)*"|'[^'\n]*'|[^\s,;&}\]"'][^\n,;&}\]"']*)"""
)
_BEARER = re.compile(r"(?P<head>\b(?:Bearer|Basic|Token)[ \t]+)(?P<value>[A-Za-z0-9._~+/=\-]{8,})")


class _Literals:
    """Finds any of many known strings in a text in one pass.

    A config with thousands of probes knows thousands of secrets, and a journal runs to
    megabytes: searching for each secret in turn would take minutes. Every value of at least
    GRAM + STRIDE - 1 characters has one of its first STRIDE 4-grams at a text position that is
    a multiple of STRIDE, so only those positions are looked up; shorter values (few) are
    searched for one by one.
    """

    GRAM = 4
    STRIDE = 4

    def __init__(self, values: Iterable[str]) -> None:
        self.short: list[str] = []
        self.index: dict[str, list[tuple[str, int]]] = {}
        for value in values:
            if len(value) < self.GRAM + self.STRIDE - 1:
                self.short.append(value)
                continue
            for offset in range(self.STRIDE):
                gram = value[offset : offset + self.GRAM]
                self.index.setdefault(gram, []).append((value, offset))

    def spans(self, text: str) -> list[tuple[int, int]]:
        found: list[tuple[int, int]] = []
        index, gram = self.index, self.GRAM
        if index:
            for q in range(0, len(text) - gram + 1, self.STRIDE):
                hits = index.get(text[q : q + gram])
                if hits:
                    for value, offset in hits:
                        at = q - offset
                        if at >= 0 and text.startswith(value, at):
                            found.append((at, at + len(value)))
        for value in self.short:
            at = text.find(value)
            while at != -1:
                found.append((at, at + len(value)))
                at = text.find(value, at + 1)
        return found

    def mask(self, text: str) -> str:
        """Every occurrence masked; overlapping ones as one (a secret inside another)."""
        spans = sorted(self.spans(text))
        if not spans:
            return text
        out: list[str] = []
        last = 0
        start, end = spans[0]
        for s, e in spans[1:]:
            if s <= end:
                end = max(end, e)
                continue
            out += [text[last:start], MASK]
            last, (start, end) = end, (s, e)
        out += [text[last:start], MASK, text[end:]]
        return "".join(out)


class Redactor:
    """Masks secrets in free text; `known` are values already known to be secret (from
    `settings_secrets`, runbook secret variables)."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        self.known = {k for k in known if k and len(k) >= MIN_LITERAL}
        self._literals: _Literals | None = None

    def learn(self, text: str) -> None:
        """Remember the secret values assigned in `text`, to mask them anywhere later."""
        for value in secrets_in(text):
            if len(value) >= MIN_LITERAL and value not in self.known:
                self.known.add(value)
                self._literals = None

    def text(self, text: str) -> str:
        self.learn(text)
        # known values first: a URL or a line the config holds is found whole
        if self._literals is None:
            self._literals = _Literals(self.known)
        text = self._literals.mask(text)
        text = _mask_url_passwords(text)
        text = _mask_assignments(text)
        text = _BEARER.sub(lambda m: f"{m['head']}{MASK}", text)
        return text

    def bytes(self, data: bytes) -> bytes:
        return self.text(data.decode("utf-8", errors="replace")).encode("utf-8")

    def data(self, value: Any) -> Any:
        """JSON-like data with every string passed through `text`."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value


def _mask_url_passwords(text: str) -> str:
    """Passwords of URLs in free text; query values stay (a log's `?page=2` is evidence), but
    those named like secrets go with the assignments."""
    if "://" not in text:
        return text

    def one(m: re.Match[str]) -> str:
        url = m[0]
        scheme = _SCHEME.match(url)
        assert scheme is not None  # _URL_IN_TEXT matched a scheme
        span = _password_span(url, scheme.end(), scheme["scheme"])
        if span is None or span[0] == span[1]:
            return url
        return url[: span[0]] + MASK + url[span[1] :]

    return _URL_IN_TEXT.sub(one, text)


def _assignments(text: str) -> list[re.Match[str]]:
    """Assignments to secret keys. A match of a harmless key (`https:` of a URL) must not
    swallow a secret one after it (`?token=...`), so the scan goes on after its key."""
    found: list[re.Match[str]] = []
    pos = 0
    while (m := _ASSIGNMENT.search(text, pos)) is not None:
        if is_secret_key(m["key"]) and MASK not in m["value"]:
            found.append(m)
            pos = m.end()
        else:
            pos = m.end("key")
    return found


def _mask_assignments(text: str) -> str:
    out: list[str] = []
    last = 0
    for m in _assignments(text):
        out.append(text[last : m.start()])
        value = m["value"]
        if value[:1] in ("'", '"'):
            masked = f"{value[0]}{MASK}{value[0]}" if len(value) > 2 else value
        else:
            masked = MASK
        out.append(f"{m['key']}{m['sep']}{masked}")
        last = m.end()
    out.append(text[last:])
    return "".join(out)


def secrets_in(text: str) -> list[str]:
    """The secret values assigned or embedded (URL passwords, bearer tokens) in `text`."""
    found: list[str] = []
    for m in _assignments(text):
        value = m["value"].strip()
        if value[:1] in ("'", '"'):
            value = value[1:-1]
        value = value.strip()
        if value and MASK not in value:
            found.append(value)
    for m in _URL_IN_TEXT.finditer(text):
        scheme = _SCHEME.match(m[0])
        assert scheme is not None
        span = _password_span(m[0], scheme.end(), scheme["scheme"])
        if span is not None and span[0] < span[1]:
            found.append(m[0][span[0] : span[1]])
    for m in _BEARER.finditer(text):
        found.append(m["value"])
    return found


__all__ = [
    "MASK",
    "CapabilityUrl",
    "Redactor",
    "Secret",
    "SecretCommand",
    "SecretHeaders",
    "SecretNamed",
    "SecretStr",
    "is_secret_key",
    "mask_capability_url",
    "mask_command",
    "mask_url",
    "mask_urls_in",
    "model_for",
    "model_shown",
    "probe_shown",
    "secrets_in",
    "secrets_of",
    "settings_secrets",
    "settings_shown",
    "shown",
    "sourced",
]
