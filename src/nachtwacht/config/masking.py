"""Masking the strings a secret hides in: names that look secret, URLs (their password, query
values and fragment; a capability URL down to its host), and command lines.

The rules are described in config/redact.py, which applies them field by field as the schema
says; config/redactor.py applies them to free text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

MASK = "••••••"


# values this short are not worth hunting for elsewhere: "1", "on", "yes" would mask half a log
MIN_LITERAL = 4


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


SCHEME = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*):(?://)", re.I)


# a URL in free text ends at white space or a quote
URL_IN_TEXT = re.compile(r"\b[a-z][a-z0-9+.\-]*://[^\s<>\"'`]+", re.I)


# SQLAlchemy's reading of `user:password@`: the password runs to the first @, `/` included
_DRIVER_USERINFO = re.compile(r"(?P<user>[^:/@]*):(?P<password>[^@]*)@")


# schemes parsed by the RFC (userinfo ends at the first / ? #); every other scheme is also
# read the way SQLAlchemy reads database URLs, and the wider of the two readings is hidden
_RFC_SCHEMES = frozenset({"http", "https", "ws", "wss", "ftp", "ftps"})


def is_secret_key(key: str) -> bool:
    """`db_password`, `apiToken`, `X-Api-Key`, `smtp_pass`, `PGPASSWORD`: yes;
    `password_reset`, `min_password_length`, `keyboard`: no."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key.strip("\"'-"))
    words = [w for w in re.split(r"[_\-.\s]+", spaced.lower()) if w]
    if not words:
        return False
    return words[-1] in SECRET_WORDS or words[-1].endswith(SECRET_SUFFIXES)


def password_span(url: str, start: int, scheme: str) -> tuple[int, int] | None:
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
    m = SCHEME.match(url)
    if m is None:
        return url
    keep = keep or _ignore
    start = m.end()
    out = url[:start]
    span = password_span(url, start, m["scheme"])
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
    m = SCHEME.match(url)
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
    span = password_span(url, start, m["scheme"])
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
    return URL_IN_TEXT.sub(lambda m: mask_url(m[0], keep), text)


def _ignore(_value: str, _name: str) -> None:
    return None


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
