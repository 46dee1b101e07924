"""Free text that has no schema (copied config files, log lines, command output): `Redactor`
masks every value the config taught it is secret, and, because nothing else can, values
assigned to keys named like a secret (`password=…`, `"api_token": "…"`), bearer credentials and
URL passwords. Masking a little too much is accepted; leaking is not. config/redact.py says
what is secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from nachtwacht.config.masking import (
    MASK,
    MIN_LITERAL,
    SCHEME,
    URL_IN_TEXT,
    is_secret_key,
    password_span,
)

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
        scheme = SCHEME.match(url)
        assert scheme is not None  # URL_IN_TEXT matched a scheme
        span = password_span(url, scheme.end(), scheme["scheme"])
        if span is None or span[0] == span[1]:
            return url
        return url[: span[0]] + MASK + url[span[1] :]

    return URL_IN_TEXT.sub(one, text)


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
    for m in URL_IN_TEXT.finditer(text):
        scheme = SCHEME.match(m[0])
        assert scheme is not None
        span = password_span(m[0], scheme.end(), scheme["scheme"])
        if span is not None and span[0] < span[1]:
            found.append(m[0][span[0] : span[1]])
    for m in _BEARER.finditer(text):
        found.append(m["value"])
    return found
