"""A drill's report, as Markdown and as a standalone HTML page (`drill report ID --format`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from markupsafe import escape

from nachtwacht.drills.measure import words


def _when(ts: float | None, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M %Z") if ts else "—"


def _mark(item: dict[str, Any]) -> str:
    return "met" if item["met"] else "MISSED"


def rows(drill: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(what, figure, target, met | MISSED) per measurement."""
    m = drill["measures"] or {"items": []}
    out = []
    for i in m["items"]:
        if i["name"] == "checklist":
            out.append((i["label"], "yes" if i["met"] else "no", "yes", _mark(i)))
        else:
            out.append((i["label"], words(i["seconds"]), words(i["target"]), _mark(i)))
    return out


def markdown(drill: dict[str, Any], scenario_title: str, zone: ZoneInfo) -> str:
    m = drill["measures"]
    lines = [
        f"# DRILL #{drill['id']}: {scenario_title}",
        "",
        f"- Scenario: {drill['scenario']} (S{drill['severity']}, {drill['kind']})",
        f"- Started: {_when(drill['started_at'], zone)} by {drill['started_by']}",
        f"- Ended: {_when(drill['ended_at'], zone)}",
        f"- Incident: #{drill['incident_id']}",
        f"- Result: {drill['result'] or drill['status']}"
        + (f" ({m['met']} of {m['counted']} targets met)" if m else ""),
        "",
    ]
    if m is None:
        lines += ["The drill is still running: its figures come when it ends.", ""]
    else:
        lines += ["| Measure | Figure | Target | |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(drill)]
        lines += ["", "## What went well", ""]
        lines += [f"- {s}" for s in m["went_well"]] or ["- nothing"]
        lines += ["", "## What missed", ""]
        lines += [f"- {s}" for s in m["missed"]] or ["- nothing: every target was met"]
        lines.append("")
    steps = drill["steps"]
    if steps:
        lines += ["## Runbook steps", ""]
        lines += [f"- {s['id']}: {s['title']} ({s['mode']})" for s in steps]
        lines.append("")
    return "\n".join(lines)


def fragment(drill: dict[str, Any], scenario_title: str, zone: ZoneInfo) -> str:
    """The report as an HTML fragment (the Drills page and the standalone page use it)."""
    m = drill["measures"]
    e = escape
    parts = [
        f"<h1>DRILL #{drill['id']}: {e(scenario_title)}</h1>",
        '<dl class="drill-facts">',
        f"<dt>Scenario</dt><dd>{e(drill['scenario'])} (S{drill['severity']}, "
        f"{e(drill['kind'])})</dd>",
        f"<dt>Started</dt><dd>{e(_when(drill['started_at'], zone))} by "
        f"{e(drill['started_by'])}</dd>",
        f"<dt>Ended</dt><dd>{e(_when(drill['ended_at'], zone))}</dd>",
        f'<dt>Incident</dt><dd><a href="/incidents/{drill["incident_id"]}">'
        f"#{drill['incident_id']}</a></dd>",
        f'<dt>Result</dt><dd data-result="{e(drill["result"] or drill["status"])}">'
        f"{e(drill['result'] or drill['status'])}"
        + (f" ({m['met']} of {m['counted']} targets met)" if m else "")
        + "</dd></dl>",
    ]
    if m is None:
        parts.append("<p>The drill is still running: its figures come when it ends.</p>")
    else:
        parts.append(
            '<table class="drill-figures"><thead><tr><th>Measure</th><th>Figure</th>'
            "<th>Target</th><th></th></tr></thead><tbody>"
        )
        for a, b, c, d in rows(drill):
            parts.append(
                f'<tr><td data-label="Measure">{e(a)}</td><td data-label="Figure">{e(b)}</td>'
                f'<td data-label="Target">{e(c)}</td>'
                f'<td data-label="" class="{"ok" if d == "met" else "missed"}">{e(d)}</td></tr>'
            )
        parts.append("</tbody></table><h2>What went well</h2><ul>")
        parts += [f"<li>{e(s)}</li>" for s in m["went_well"]] or ["<li>nothing</li>"]
        parts.append("</ul><h2>What missed</h2><ul>")
        parts += [f"<li>{e(s)}</li>" for s in m["missed"]] or [
            "<li>nothing: every target was met</li>"
        ]
        parts.append("</ul>")
    if drill["steps"]:
        parts.append("<h2>Runbook steps</h2><ul>")
        parts += [
            f"<li>{e(s['id'])}: {e(s['title'])} ({e(s['mode'])})</li>" for s in drill["steps"]
        ]
        parts.append("</ul>")
    return "\n".join(parts)


def html(drill: dict[str, Any], scenario_title: str, zone: ZoneInfo) -> str:
    body = fragment(drill, scenario_title, zone)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>DRILL #{drill['id']} report</title>"
        "<style>body{font-family:sans-serif;max-width:50rem;margin:1rem auto;padding:0 1rem}"
        "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ccc;"
        "padding:.3rem;text-align:left}.missed{color:#a00;font-weight:bold}.ok{color:#070}"
        "</style></head><body>" + body + "</body></html>\n"
    )
