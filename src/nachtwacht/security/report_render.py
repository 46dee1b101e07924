"""The security report as JSON, Markdown and one self-contained HTML document.

Addresses, paths, user names and reasons come from attackers' log lines: the report has cut
them (`report.cut`: length, control and bidi characters); here the HTML escapes every value
(Jinja's autoescape) and the Markdown turns `<`, `>`, `&` into entities and backslash-escapes
Markdown's own characters, so a path such as `/<script>` or `/[x](javascript:...)` is text in
any Markdown viewer.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape

from nachtwacht.clock import iso
from nachtwacht.security.report import Report

TEMPLATES = Path(__file__).resolve().parent.parent / "web" / "templates"
TIME_FIELDS = frozenset(
    {
        "generated_at",
        "since",
        "until",
        "last_seen",
        "fired_at",
        "resolved_at",
        "created_at",
        "expires_at",
        "removed_at",
        "ts",
        "last_report_at",
        "last_tick",
        "last_ok",
        "last_error_at",
    }
)
BASIS = {"report": "the last report", "period": "the previous period of the same length"}
STATE_TEXT = {
    "off": "off: no security sources are configured",
    "waiting": "waiting for the first tick",
    "ok": "reading its logs",
    "failing": "failing",
    "behind": "BEHIND: no good tick for more than three intervals",
}


class Render:
    """Formatting shared by the documents and the Security page."""

    def __init__(self, zone: ZoneInfo, now: float) -> None:
        self.zone = zone
        self.now = now

    def time(self, ts: float | None) -> str:
        if ts is None:
            return "—"
        return datetime.fromtimestamp(ts, self.zone).strftime("%Y-%m-%d %H:%M:%S %Z")

    def ago(self, ts: float | None) -> str:
        if ts is None:
            return "never"
        delta = self.now - ts
        return f"{_span(delta)} ago" if delta >= 0 else f"in {_span(-delta)}"

    @staticmethod
    def state(state: str) -> str:
        return STATE_TEXT.get(state, state)

    @staticmethod
    def basis(basis: str) -> str:
        return BASIS.get(basis, basis)

    @staticmethod
    def sign(before: int, now: int) -> str:
        diff = now - before
        return "±0" if diff == 0 else f"{diff:+d}"


def _span(seconds: float) -> str:
    s = abs(seconds)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


# -- JSON ----------------------------------------------------------------------------------------


def _times(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _times(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_times(v) for v in value]
    if key in TIME_FIELDS and isinstance(value, float | int) and not isinstance(value, bool):
        return iso(float(value))
    return value


def as_json(report: Report) -> dict[str, Any]:
    """The report as plain data, times as ISO 8601 UTC."""
    data = _times(dataclasses.asdict(report))
    data["window"]["days"] = report.window.days
    data["changes"]["baseline"]["days"] = report.changes.baseline.days
    return data


# -- Markdown ------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]|~])")


def md(value: Any) -> str:
    """One value as inert Markdown text (no HTML, no links, no emphasis, one line)."""
    text = "—" if value is None or value == "" else str(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return " ".join(text.split())


def _table(head: list[str], rows: list[list[Any]], empty: str = "None.") -> list[str]:
    if not rows:
        return [f"_{empty}_", ""]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(md(c) for c in row) + " |" for row in rows]
    return [*out, ""]


def markdown(report: Report, site: str, zone: ZoneInfo) -> str:
    r = Render(zone, report.generated_at)
    w, ch, h, lg = report.window, report.changes, report.health, report.logins
    out = [
        f"# Security report · {md(site)} · last {report.days} days",
        "",
        f"From {r.time(w.since)} to {r.time(w.until)}; generated {r.time(report.generated_at)}.",
        "",
        "## Detector health",
        "",
        f"The `security` module is **{md(r.state(h.state))}** (reads every {h.interval:g} s); "
        f"last tick {r.ago(h.last_tick)}, last good tick {r.ago(h.last_ok)}.",
        "",
    ]
    if h.last_error:
        out += [f"Last error ({r.time(h.last_error_at)}): {md(h.last_error)}", ""]
    out += _table(
        ["Source", "Path", "Position"], [[s.name, s.path, s.note] for s in h.sources], "No sources."
    )
    out += [
        "## What changed",
        "",
        f"Compared with {r.basis(ch.basis)}: {r.time(ch.baseline.since)} to "
        f"{r.time(ch.baseline.until)}.",
        "",
    ]
    out += _table(
        ["Count", "Before", "Now", "Change"],
        [[d.name, d.before, d.now, r.sign(d.before, d.now)] for d in ch.deltas],
    )
    out += [
        f"New rules firing: {md(', '.join(ch.new_rules) or 'none')}. "
        f"Rules no longer firing: {md(', '.join(ch.gone_rules) or 'none')}.",
        "",
        f"New addresses ({ch.new_address_count}): "
        + (", ".join(md(a) for a in ch.new_addresses) or "none")
        + (" …" if ch.new_address_count > len(ch.new_addresses) else ""),
        "",
        f"## Findings by rule ({report.findings})",
        "",
    ]
    out += _table(
        ["Rule", "What", "Severity", "Findings", "Addresses/accounts"],
        [[x.rule, x.title, f"S{x.severity}", x.findings, x.keys] for x in report.by_rule],
        "No findings.",
    )
    out += [f"## Findings by address ({report.address_count})", ""]
    out += _table(
        ["Address", "Findings", "Rules", "Events", "Blocked"],
        [
            [a.address, a.findings, ", ".join(a.rules), a.events, "yes" if a.blocked else ""]
            for a in report.by_address
        ],
        "No address has a finding.",
    )
    out += ["## Top offending addresses", ""]
    out += _table(
        ["Address", "Findings", "Events", "Last seen", "Blocked"],
        [
            [a.address, a.findings, a.events, r.time(a.last_seen), "yes" if a.blocked else ""]
            for a in report.top_addresses
        ],
    )
    out += ["## Top paths", ""]
    out += _table(
        ["Path", "Requests", "Kinds"], [[p.path, p.n, ", ".join(p.kinds)] for p in report.top_paths]
    )
    out += [f"## Logins: {lg.failed} failed, {lg.ok} successful", ""]
    out += _table(
        ["Day (UTC)", "Failed", "Successful"], [[d.day, d.failed, d.ok] for d in lg.per_day]
    )
    for title, rows in (
        ("Failed, by address", lg.failed_addresses),
        ("Failed, by account", lg.failed_accounts),
        ("Successful, by address", lg.ok_addresses),
        ("Successful, by account", lg.ok_accounts),
    ):
        out += [f"### {title}", ""] + _table(["", "Logins"], [[c.name, c.n] for c in rows])
    out += [f"## Blocks in force ({report.blocks_in_force_count})", ""]
    out += _blocks_md(report.blocks_in_force, r)
    out += [f"## Blocks made in the window ({report.blocks_made_count})", ""]
    out += _blocks_md(report.blocks_made, r)
    a = report.audit
    out += [f"## Nachtwacht's own audit log ({a.total} entries)", ""]
    out += ["### By group", ""] + _table(["Group", "Entries"], [[c.name, c.n] for c in a.by_group])
    out += ["### By action", ""]
    out += _table(["Action", "Entries"], [[c.name, c.n] for c in a.by_action])
    out += ["### Latest notable entries", ""]
    out += _table(
        ["Time", "Actor", "Action", "Target", "Address"],
        [[r.time(e.ts), e.actor, e.action, e.target, e.ip] for e in a.notable],
    )
    return "\n".join(out).rstrip() + "\n"


def _blocks_md(rows: list[Any], r: Render) -> list[str]:
    return _table(
        ["#", "Address", "State", "Since", "Until", "By", "Reason"],
        [
            [
                b.id,
                b.address,
                b.state,
                r.time(b.created_at),
                r.time(b.expires_at) if b.expires_at else "unblocked by hand",
                b.created_by,
                b.reason,
            ]
            for b in rows
        ],
    )


# -- HTML ----------------------------------------------------------------------------------------

_env: Environment | None = None


def environment() -> Environment:
    global _env
    if _env is None:
        _env = Environment(
            loader=FileSystemLoader(str(TEMPLATES)),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
    return _env


def html(report: Report, site: str, zone: ZoneInfo) -> str:
    """A self-contained HTML document (inline styles, no scripts): it opens from a file."""
    return (
        environment()
        .get_template("security_report_document.html")
        .render(report=report, site=site, r=Render(zone, report.generated_at), links=False)
    )


def render(report: Report, fmt: str, site: str, zone: ZoneInfo) -> str:
    if fmt == "json":
        return json.dumps(as_json(report), indent=2, sort_keys=False) + "\n"
    if fmt == "html":
        return html(report, site, zone)
    if fmt == "md":
        return markdown(report, site, zone)
    raise ValueError(f"unknown format '{fmt}'; use md, html or json")
