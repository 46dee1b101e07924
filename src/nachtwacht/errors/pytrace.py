"""A Python traceback as text (logs, Frappe's Error Log, the JSON endpoint) -> Sentry exceptions.

Gives the exception chain with frames shaped like the Sentry SDK's, so such errors group by
their stack frames like those sent by an SDK. Paths become module-like names that do not
depend on where the code is installed (`.../site-packages/requests/api.py` -> `requests.api`,
`.../apps/erpnext/erpnext/stock/utils.py` -> `erpnext.stock.utils`); frames of installed
packages and of the standard library are not in-app.
"""

from __future__ import annotations

import re
from typing import Any

_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)(?:, in (?P<func>.+))?$')
_CHAIN = (
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)
_EXC_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<value>.*))?$")
_CARETS = re.compile(r"^\s*[\^~\s]+$")
_LIBRARY = re.compile(r"/(?:site|dist)-packages/|/lib/python\d|^<frozen ")


def module_name(path: str) -> str:
    """A stable, module-like name for a file path."""
    text = path.replace("\\", "/")
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
            break
    else:
        if "/apps/" in text:  # a Frappe bench: apps/<app>/<app>/module.py
            text = text.rsplit("/apps/", 1)[1].split("/", 1)[-1]
        else:
            text = "/".join(text.strip("/").split("/")[-2:])
    if text.endswith(".py"):
        text = text[:-3]
    return text.replace("/", ".").removesuffix(".__init__") or path


def _block(lines: list[str]) -> dict[str, Any] | None:
    frames: list[dict[str, Any]] = []
    tail: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        match = _FRAME.match(line)
        if match:
            path = match["file"]
            frame: dict[str, Any] = {
                "filename": path,
                "abs_path": path,
                "module": module_name(path),
                "function": (match["func"] or "?").strip(),
                "lineno": int(match["line"]),
                "in_app": not _LIBRARY.search(path),
            }
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            if nxt.startswith("    ") and not _FRAME.match(nxt) and not _CARETS.match(nxt):
                frame["context_line"] = nxt.strip()
                i += 1
            frames.append(frame)
            tail = []
        elif frames and not _CARETS.match(line) and line.strip():
            tail.append(line)
        i += 1
    if not tail:
        return (
            None if not frames else {"type": "Error", "value": "", "stacktrace": {"frames": frames}}
        )
    match = _EXC_LINE.match(tail[0].strip())
    if match is None:
        kind, value = "Error", "\n".join(t.strip() for t in tail)
    else:
        kind = match["type"]
        value = "\n".join([match["value"] or "", *[t.strip() for t in tail[1:]]]).strip()
    exc: dict[str, Any] = {"type": kind.rsplit(".", 1)[-1], "value": value}
    if "." in kind:
        exc["module"] = kind.rsplit(".", 1)[0]
    if frames:
        exc["stacktrace"] = {"frames": frames}
    return exc


def parse(text: str) -> list[dict[str, Any]]:
    """The exception chain of a traceback, oldest first (as Sentry's `exception.values`)."""
    blocks: list[list[str]] = [[]]
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.strip() in _CHAIN:
            blocks.append([])
        else:
            blocks[-1].append(line.rstrip())
    out = []
    for block in blocks:
        if not any(_FRAME.match(line) for line in block):
            # no frames: maybe just "Type: message" at the end
            lines = [ln for ln in block if ln.strip() and not ln.startswith("Traceback")]
            if lines:
                match = _EXC_LINE.match(lines[-1].strip())
                if match and out == [] and len(blocks) == 1:
                    out.append({"type": match["type"], "value": match["value"] or ""})
            continue
        exc = _block(block)
        if exc is not None:
            out.append(exc)
    return out
