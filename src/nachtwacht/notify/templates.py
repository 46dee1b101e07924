"""Message templates: the protocol's four, plus resolved, reminder and test, as Jinja2 files.

A template file is named `<kind>.j2`. Its first rendered line is the subject (an optional
`Subject:` prefix is removed); everything after it is the body. A file of the same name in
`notify.templates_dir` replaces the built-in one, so users override one message at a time.

Messages are plain text, so autoescape is off; undefined names render as empty strings so an
override that mentions a field the context lacks still sends a page instead of failing.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    TemplateNotFound,
    is_undefined,
    pass_context,
)

PACKAGE_DIR = Path(__file__).parent / "templates"
KINDS = (
    "emergency_alert",
    "emergency_notification",
    "status_update",
    "customer_notice",
    "resolved",
    "reminder",
    "test",
)
TIME_FORMAT = "%Y-%m-%d %H:%M %Z"


class TemplateError(Exception):
    """A template is missing or does not render; the message names the file."""


@pass_context
def _local(ctx: Any, ts: float | None, fmt: str = TIME_FORMAT) -> str:
    """Epoch seconds as a time in the site's timezone: `{{ incident.detected_at | local }}`."""
    if ts is None or is_undefined(ts) or ts == "":
        return "not set"
    zone = ctx.get("zone")
    if not isinstance(zone, ZoneInfo):
        zone = ZoneInfo(ctx.get("timezone") or "UTC")
    return datetime.fromtimestamp(float(ts), zone).strftime(fmt)


def _duration(seconds: float | None) -> str:
    """Seconds as words: 90 → "2 minutes", 1800 → "30 minutes", 7200 → "2 hours"."""
    if seconds is None or is_undefined(seconds) or seconds == "":
        return "unknown"
    s = float(seconds)
    if s < 90:
        return f"{s:.0f} seconds"
    if s < 5400:
        return f"{s / 60:.0f} minutes"
    if s < 2 * 86400:
        hours = s / 3600
        return f"{hours:.0f} hours" if hours == int(hours) else f"{hours:.1f} hours"
    return f"{s / 86400:.1f} days"


@lru_cache(maxsize=16)
def environment(templates_dir: str | None = None) -> Environment:
    loaders = []
    if templates_dir:
        loaders.append(FileSystemLoader(templates_dir))
    loaders.append(FileSystemLoader(str(PACKAGE_DIR)))
    env = Environment(
        loader=ChoiceLoader(loaders),
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["local"] = _local
    env.filters["duration"] = _duration
    return env


def render(kind: str, context: dict[str, Any], templates_dir: str | None = None) -> tuple[str, str]:
    """Render `<kind>.j2` with `context`; return (subject, body)."""
    return split_subject(render_text(kind, context, templates_dir))


def render_text(name: str, context: dict[str, Any], templates_dir: str | None = None) -> str:
    """The whole rendered text of `<name>.j2` (the SMS template is one line, no subject)."""
    env = environment(templates_dir)
    try:
        template = env.get_template(f"{name}.j2")
    except TemplateNotFound:
        where = f"{templates_dir} or the built-in templates" if templates_dir else "built-ins"
        raise TemplateError(f"no template '{name}.j2' in {where}") from None
    try:
        return template.render(context)
    except Exception as exc:  # a broken override must name its file, not crash the caller
        raise TemplateError(f"template '{name}.j2' ({template.filename}): {exc}") from exc


def split_subject(text: str) -> tuple[str, str]:
    lines = text.strip("\n").splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return "", ""
    subject = lines[0].strip()
    if subject.lower().startswith("subject:"):
        subject = subject[len("subject:") :].strip()
    body = "\n".join(line.rstrip() for line in lines[1:]).strip("\n")
    return subject, body
