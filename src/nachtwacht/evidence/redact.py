"""Masking secrets in text that leaves Nachtwacht: evidence bundles and runbook output.

Two passes, because a secret seldom appears only once. First the text is scanned for
assignments to secret-looking keys (`password=…`, `db_password: …`, `"api_token": "…"`,
`--password=…`) and URLs with a password (`mysql://app:s3cret@db`); those values are masked and
remembered. Then every remembered value, and every value the caller already knows is secret
(the config's passwords, runbook secret variables), is masked wherever else it occurs: in a log
line, a process's command line, a journal entry.

A key is secret when its last word (split at `_ - .` and camelCase) is one of SECRET_WORDS, so
`db_password` and `X-Api-Key` are, `password_reset_enabled` and `min_password_length` are not.
Masking a little too much (the rest of an unquoted line) is accepted; leaking is not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

MASK = "••••••"
SECRET_WORDS = frozenset(
    {"password", "passwd", "pwd", "pass", "token", "secret", "key", "apikey", "credentials"}
    | {"credential", "authorization", "cookie", "dsn", "passphrase", "auth"}
)
# values this short are not worth hunting for elsewhere: "1", "on", "yes" would mask half a log
MIN_LITERAL = 4

# key, separator, value: `key=value`, `key: value`, `"key": "value"`, `--key value` is not
# matched (no separator), `--key=value` is. The value is a quoted string or the rest of the
# line up to a delimiter that ends a value in JSON, query strings and command lines.
_ASSIGNMENT = re.compile(
    r"""(?P<key>["']?(?:--?)?[A-Za-z_][\w.\-]*["']?)(?P<sep>[ \t]*[:=][ \t]*)"""
    r"""(?P<value>"(?:[^"\\\n]|\\.)*"|'[^'\n]*'|[^\s,;&}\]"'][^\n,;&}\]"']*)"""
)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.\-]*://[^/\s:@]*:)(?P<pw>[^@\s/]+)@", re.I)
_BEARER = re.compile(r"(?P<head>\b(?:Bearer|Basic|Token)[ \t]+)(?P<value>[A-Za-z0-9._~+/=\-]{8,})")


def is_secret_key(key: str) -> bool:
    """`db_password`, `apiToken`, `X-Api-Key`: yes; `password_reset`, `keyboard`: no."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key.strip("\"'-"))
    words = [w for w in re.split(r"[_\-.\s]+", spaced.lower()) if w]
    return bool(words) and words[-1] in SECRET_WORDS


@dataclass
class Redactor:
    """Masks secrets; `known` are values already known to be secret (config passwords)."""

    known: set[str] = field(default_factory=set)

    def __init__(self, known: Iterable[str] = ()) -> None:
        self.known = {k for k in known if k and len(k) >= MIN_LITERAL}

    def learn(self, text: str) -> None:
        """Remember the secret values assigned in `text`, to mask them anywhere later."""
        for value in secrets_in(text):
            if len(value) >= MIN_LITERAL:
                self.known.add(value)

    def text(self, text: str) -> str:
        self.learn(text)
        text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)
        text = _mask_assignments(text)
        text = _BEARER.sub(lambda m: f"{m['head']}{MASK}", text)
        # longest first, so a secret containing another is masked whole
        for value in sorted(self.known, key=len, reverse=True):
            if value in text:
                text = text.replace(value, MASK)
        return text

    def bytes(self, data: bytes) -> bytes:
        return self.text(data.decode("utf-8", errors="replace")).encode("utf-8")


def _assignments(text: str) -> list[re.Match[str]]:
    """Assignments to secret keys. A match of a harmless key (`https:` of a URL) must not
    swallow a secret one after it (`?token=...`), so the scan goes on after its key."""
    found: list[re.Match[str]] = []
    pos = 0
    while (m := _ASSIGNMENT.search(text, pos)) is not None:
        if is_secret_key(m["key"]):
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
        out.append(_mask_assignment(m))
        last = m.end()
    out.append(text[last:])
    return "".join(out)


def _mask_assignment(m: re.Match[str]) -> str:
    value = m["value"]
    if value[:1] in ("'", '"'):
        masked = f"{value[0]}{MASK}{value[0]}" if len(value) > 2 else value
    else:
        masked = MASK
    return f"{m['key']}{m['sep']}{masked}"


def secrets_in(text: str) -> list[str]:
    """The secret values assigned or embedded (URL passwords) in `text`."""
    found: list[str] = []
    for m in _assignments(text):
        value = m["value"].strip()
        if value[:1] in ("'", '"'):
            value = value[1:-1]
        value = value.strip()
        if value and MASK not in value:
            found.append(value)
    for m in _URL_PASSWORD.finditer(text):
        found.append(m["pw"])
    for m in _BEARER.finditer(text):
        found.append(m["value"])
    return found


def settings_secrets(data: object) -> set[str]:
    """Secret values anywhere in dumped settings: values of secret keys and URL passwords."""
    out: set[str] = set()

    def walk(value: object, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item, key)
        elif isinstance(value, str) and value:
            if key and is_secret_key(key):
                out.add(value)
            for m in _URL_PASSWORD.finditer(value):
                out.add(m["pw"])

    walk(data)
    return {v for v in out if len(v) >= MIN_LITERAL}
