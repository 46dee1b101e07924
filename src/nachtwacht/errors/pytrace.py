"""A Python traceback as text -> Sentry `exception.values`; the one parser for such text.

Used by the JSON endpoint (`ingest_api`, a traceback sent as `stacktrace` text) and the Frappe
Error Log poller (`frappe.errorlog`), so the same traceback gives the same frames, and groups
into the same issue, whichever way it came in. Frames are shaped like the Sentry SDK's, so
they also group with events an SDK sent for the same code.

Reads the standard format (`traceback.format_exception`, chained exceptions included, 3.11+
position markers skipped) and traceback-with-variables' (Frappe v15's
`get_traceback(with_context=True)`): there the local variables printed under a frame become
its `vars` (those of the `VARS_FRAMES` innermost frames only, so an event stays small) and
are never taken for the exception line.

Module names do not depend on where the code is installed: site-packages and the standard
library count from their roots (`.../site-packages/requests/api.py` -> `requests.api`), a
Frappe bench's apps from the app (`apps/erpnext/erpnext/accounts/x.py`, bench-relative as
Frappe writes it, or absolute -> `erpnext.accounts.x`, as sentry-sdk names it); elsewhere the
last directory and the file name stand in (`/srv/app/shop/views.py` -> `shop.views`). Frames
of installed packages and of the standard library are not in-app.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

_HEADER = re.compile(r"^Traceback(?P<vars> with variables)? \(most recent call last\):\s*$")
_FILE = re.compile(
    r'^(?P<indent> *)File "(?P<path>[^"]+)", line (?P<lineno>\d+)(?:, in (?P<func>.+?))?\s*$'
)
_EXC_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<value>.*))?$")
_VAR = re.compile(r"^(?P<name>\w+) = (?P<value>.*)$")
_MARKS = re.compile(r"^[\s^~]+$")  # 3.11+ position markers under a context line
_CHAIN = (
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)
_SITE_PACKAGES = re.compile(r"/(?:site|dist)-packages/")
_STDLIB = re.compile(r"/lib/python\d+(?:\.\d+)?/")
# a bench's app: apps/<app>/<app>/...; the repeated name keeps an "apps" directory above the
# bench (/srv/apps/bench/apps/erpnext/erpnext/...) or inside an app from being taken for it
_BENCH_APP = re.compile(r"(?:^|/)apps/(?P<app>[^/]+)/(?P=app)/")
_FROZEN = re.compile(r"^<frozen (?P<module>[\w.]+)>$")
_SOURCE_EXT = re.compile(r"\.py[cx]?$")
MAX_VARS = 30  # per frame
MAX_VAR_CHARS = 300
VARS_FRAMES = 10  # only the innermost frames keep theirs: an event stays well under 1 MB


def parse(text: str) -> list[dict[str, Any]]:
    """The exceptions of a Python traceback, oldest first, as Sentry `exception.values`.

    Text with neither a `Traceback (...)` header nor a `File "..."` line gives [] (a plain
    message is not an exception).
    """
    # a traceback pasted with an indent (a log, a quoted mail) reads as printed
    lines = textwrap.dedent(text.replace("\r\n", "\n").expandtabs(4)).split("\n")
    chain: list[dict[str, Any]] = []
    block: list[str] = []
    header: re.Match[str] | None = None

    def close() -> None:
        if header is not None or any(_FILE.match(line) for line in block):
            chain.append(_parse_block(block, with_vars=bool(header and header["vars"])))

    for raw in lines:
        line = raw.rstrip()
        found = _HEADER.match(line)
        if line.strip() in _CHAIN:
            close()
            block, header = [], None
        elif found:
            if any(_FILE.match(b) for b in block):
                close()  # a chained traceback printed without the "During handling" line
            block, header = [], found  # text before a header is not part of it
        else:
            block.append(line)
    close()
    return chain


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _parse_block(lines: list[str], with_vars: bool) -> dict[str, Any]:
    frames: list[dict[str, Any]] = []
    # start at the first frame: what a log wrote before it is not the exception
    i = next((k for k, line in enumerate(lines) if _FILE.match(line)), 0)
    while i < len(lines):
        line = lines[i]
        match = _FILE.match(line)
        if match is None:
            if line.startswith(" ") or not line.strip():
                i += 1  # "[Previous line repeated 996 more times]", blank lines
                continue
            break  # column 0 after the frames: "Type: value"
        frame = _frame(match)
        frames.append(frame)
        depth = len(match["indent"])
        i += 1
        has_context = False
        while i < len(lines) and lines[i].strip() and _indent(lines[i]) > depth:
            body = lines[i]
            if _FILE.match(body):
                break
            i += 1
            if _MARKS.match(body):
                continue
            # traceback-with-variables prints the source 2 deeper than the frame and the
            # variables 4 deeper (with no source, as for `<string>`, only the variables)
            if with_vars and _indent(body) > depth + 2:
                var = _VAR.match(body.strip())
                frame_vars = frame.setdefault("vars", {})
                if var and not var["name"].startswith("__") and len(frame_vars) < MAX_VARS:
                    frame_vars[var["name"]] = var["value"][:MAX_VAR_CHARS]
            elif not has_context:
                frame["context_line"] = body.strip()
                has_context = True
            # else: the further lines of a multi-line statement (3.13)
        if not frame.get("vars"):
            frame.pop("vars", None)
    for frame in frames[:-VARS_FRAMES]:
        frame.pop("vars", None)
    rest = lines[i:]
    while rest and not rest[-1].strip():
        rest.pop()
    exc: dict[str, Any] = {"type": "Error", "value": ""}
    if rest:
        head = _EXC_LINE.match(rest[0])
        if head:
            module, _, kind = head["type"].rpartition(".")
            exc["type"] = kind
            if module and module != "builtins":
                exc["module"] = module
            exc["value"] = "\n".join([head["value"] or "", *rest[1:]]).strip()
        else:
            exc["value"] = "\n".join(rest).strip()
    if frames:
        exc["stacktrace"] = {"frames": frames}
    return exc


def _frame(match: re.Match[str]) -> dict[str, Any]:
    path = match["path"]
    frame: dict[str, Any] = {
        "filename": path,
        "abs_path": path,
        "lineno": int(match["lineno"]),
        "in_app": in_app(path),
    }
    if match["func"]:
        frame["function"] = match["func"]
    module = module_name(path)
    if module:
        frame["module"] = module
    return frame


def in_app(path: str) -> bool:
    """False for installed packages and the standard library (frozen modules included)."""
    text = path.replace("\\", "/")
    return not (_FROZEN.match(text) or _SITE_PACKAGES.search(text) or _STDLIB.search(text))


def module_name(path: str) -> str | None:
    """The dotted module of a file, independent of where it is installed.

    None for pseudo-files such as `<string>` or `<serverscript>`: their name is stable and
    stands in as the frame's filename.
    """
    text = path.replace("\\", "/")
    frozen = _FROZEN.match(text)
    if frozen:
        return frozen["module"]
    if text.startswith("<"):
        return None
    site = list(_SITE_PACKAGES.finditer(text))
    stdlib = _STDLIB.search(text)
    bench = _BENCH_APP.search(text)
    if site:
        rel = text[site[-1].end() :]
    elif stdlib:
        rel = text[stdlib.end() :]
    elif bench:
        rel = f"{bench['app']}/{text[bench.end() :]}"
    else:
        rel = "/".join(text.strip("/").split("/")[-2:])
    rel = _SOURCE_EXT.sub("", rel)
    if rel == "__init__" or rel.endswith("/__init__"):
        rel = rel[: -len("__init__")].rstrip("/") or rel
    return rel.replace("/", ".") or None
