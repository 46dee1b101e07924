"""The review document as Markdown and as one self-contained HTML page (review_document.html).

Durations are written exactly enough to check against a clock (`4 min 05 s`), times in the
site's timezone with seconds.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from nachtwacht.config.schema import Settings
from nachtwacht.notify.compose import label
from nachtwacht.reviews.postmortem import delta

TEMPLATES = Path(__file__).resolve().parent.parent / "web" / "templates"


def span(seconds: float | None) -> str:
    """Exact enough to check against a clock: `45 s`, `4 min 05 s`, `1 h 02 min 05 s`."""
    if seconds is None:
        return "—"
    rest = int(round(seconds))
    days, rest = divmod(rest, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h {minutes:02d} min"
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


class Render:
    """Formatting shared by the Markdown and HTML documents."""

    def __init__(self, settings_zone: Any) -> None:
        self.zone = settings_zone

    def time(self, ts: float | None) -> str:
        if ts is None:
            return "—"
        return datetime.fromtimestamp(ts, self.zone).strftime("%Y-%m-%d %H:%M:%S %Z")

    span = staticmethod(span)
    label = staticmethod(label)

    @staticmethod
    def sla(met: bool | None) -> str:
        return {True: "met", False: "MISSED", None: "not decided yet"}[met]


def _cell(text: Any) -> str:
    return str(text if text is not None else "—").replace("|", "\\|").replace("\n", " ")


def markdown(review: dict[str, Any], settings: Settings) -> str:
    r = Render(settings.zone)
    inc, tm, fg = review["incident"], review["times"], review["figures"]
    out = [
        f"# Post-incident review: #{inc['id']} {inc['title']}",
        "",
        f"{review['site']} · S{inc['severity']} {inc['severity_name']} · {inc['status']} · "
        f"component {inc['component'] or '—'} · commander {inc['commander_name'] or '—'}  ",
        f"Generated {r.time(review['generated_at'])}; times in {review['timezone']}.",
        "",
        "## Summary",
        "",
        "| Moment | Time | Figure |",
        "|---|---|---|",
        f"| Started | {r.time(tm['started_at'])} | |",
        f"| Detected | {r.time(tm['detected_at'])} | time to detect {span(fg['time_to_detect'])} |",
        f"| Acknowledged | {r.time(tm['acknowledged_at'])}"
        f"{' by ' + _cell(review['acknowledged_by']) if review['acknowledged_by'] else ''} "
        f"| time to acknowledge {span(fg['time_to_acknowledge'])} |",
        f"| Mitigated | {r.time(tm['mitigated_at'])} "
        f"| time to mitigate {span(fg['time_to_mitigate'])} |",
        f"| Resolved | {r.time(tm['resolved_at'])} "
        f"| time to resolve {span(fg['time_to_resolve'])} |",
        "",
        f"Duration (started to resolved): {span(fg['duration'])}.  ",
        f"Response SLA ({review['sla']['target']}; due {r.time(review['sla']['due_at'])}): "
        f"**{r.sla(review['sla']['met'])}**"
        + (f", breach recorded {r.time(tm['breached_at'])}" if tm["breached_at"] else "")
        + ".",
    ]
    out += ["", "## Downtime per component", ""]
    if review["downtime"]:
        out += ["| Component | Down | Probes |", "|---|---|---|"]
        for d in review["downtime"]:
            probes = ", ".join(f"{p['probe']} {span(p['seconds'])}" for p in d["probes"]) or "—"
            out.append(f"| {_cell(d['component'])} | {span(d['seconds'])} | {_cell(probes)} |")
    else:
        out.append("No probe was critical during the incident.")
    out += _timeline(review, r)
    out += _communication(review, r)
    out += _work(review, r)
    out += _analysis(review, r)
    return "\n".join(out) + "\n"


def _timeline(review: dict[str, Any], r: Render) -> list[str]:
    out = ["", "## Timeline", "", "| Time | Event | By | What |", "|---|---|---|---|"]
    for e in review["timeline"]:
        out.append(
            f"| {r.time(e['at'])} | {e['kind'].replace('_', ' ')} | {_cell(e['actor'])} "
            f"| {_cell(e['message'])} |"
        )
    return out


def _communication(review: dict[str, Any], r: Render) -> list[str]:
    n = review["notifications"]
    kinds = ", ".join(f"{label(k)} {v}" for k, v in sorted(n["by_kind"].items())) or "none"
    out = [
        "",
        "## Communication",
        "",
        f"{n['total']} notifications: {n['sent']} sent, {n['failed']} failed"
        + (f", {n['withdrawn']} withdrawn" if n.get("withdrawn") else "")
        + f" ({kinds}).",
        "",
    ]
    if n["rows"]:
        out += ["| Queued | Sent | Kind | Channel | To | Status |", "|---|---|---|---|---|---|"]
        for m in n["rows"]:
            out.append(
                f"| {r.time(m['created_at'])} | {r.time(m['sent_at'])} | {label(m['kind'])} "
                f"| {m['channel']} | {_cell(m['contact'] or 'channel')} | {m['status']} |"
            )
    people = review["responders"]
    roles = ", ".join(f"{x['name']} ({x['role']})" for x in people["roles"]) or "none assigned"
    out += [
        "",
        "## Responders",
        "",
        f"- Acknowledged by: {people['acknowledged_by'] or 'nobody'}",
        f"- Roles: {roles}",
        f"- Acted on the timeline: {', '.join(people['actors']) or 'nobody'}",
    ]
    return out


def _work(review: dict[str, Any], r: Render) -> list[str]:
    out = ["", "## Runbooks", ""]
    if not review["runbooks"]:
        out.append("No runbook was run for this incident.")
    for run in review["runbooks"]:
        dry = " (dry run)" if run["dry_run"] else ""
        out += [
            f"### {run['runbook']}: run #{run['id']}{dry}, {run['status']}, by {run['started_by']}",
            "",
            "| # | Step | Kind | Status | Started | Took | Attempts | Exit | Confirmed by |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in run["steps"]:
            took = delta(s["finished_at"], s["started_at"])
            out.append(
                f"| {s['idx'] + 1} | {_cell(s['name'])} | {s['kind']} | {s['status']} "
                f"| {r.time(s['started_at'])} | {span(took)} | {s['attempts']} "
                f"| {_cell(s['exit_code'])} | {_cell(s['confirmed_by'])} |"
            )
        out.append("")
    out += ["", "## Evidence", ""]
    if not review["evidence"]:
        out.append("No evidence bundle was captured for this incident.")
    else:
        out += ["| Captured | By | Host | Files | Bytes | Manifest SHA-256 | Path |"]
        out += ["|---|---|---|---|---|---|---|"]
        for b in review["evidence"]:
            out.append(
                f"| {r.time(b['created_at'])} | {_cell(b['created_by'])} | {_cell(b['host'])} "
                f"| {b['files']} | {b['size_bytes']} | `{b['manifest_sha256']}` "
                f"| {_cell(b['path'])} |"
            )
    out += ["", "## Restoration checklist", ""]
    check = review["checklist"]
    if not check["runs"] and not check["skipped"]:
        out.append("No restoration checklist was run for this incident.")
    for run in check["runs"]:
        failed = [i["item"] for i in run["items"] if not i["ok"]]
        verdict = "passed" if run["passed"] else f"FAILED ({', '.join(failed)})"
        out.append(f"- Run #{run['id']} at {r.time(run['ran_at'])} by {run['ran_by']}: {verdict}")
    for skip in check["skipped"]:
        out.append(f"- Skipped at {r.time(skip['at'])} by {skip['actor']}: {skip['reason']}")
    return out


def _analysis(review: dict[str, Any], r: Render) -> list[str]:
    fields = review["fields"]
    out = ["", "## Root cause analysis"]
    for key, title in (
        ("root_cause", "Root cause"),
        ("contributing_factors", "Contributing factors"),
        ("impact", "Impact"),
        ("lessons", "Lessons learned"),
    ):
        out += ["", f"### {title}", "", fields.get(key) or "_Not filled in yet._"]
    out += ["", "## Improvement actions", ""]
    if not review["followups"]:
        out.append("_None recorded yet._")
    else:
        out += ["| # | Action | Owner | Due | Status |", "|---|---|---|---|---|"]
        for f in review["followups"]:
            status = f["status"] + (" (overdue)" if f["overdue"] else "")
            out.append(
                f"| {f['id']} | {_cell(f['title'])} | {f['owner']} | {r.time(f['due_ts'])} "
                f"| {status} |"
            )
    d = review["deadlines"]
    out += [
        "",
        "## Deadlines",
        "",
        f"- Immediate analysis (root cause, impact) due {r.time(d['analysis']['due_at'])}: "
        f"{'done' if d['analysis']['done'] else 'open'}",
        f"- Formal review (lessons) due {r.time(d['review']['due_at'])}: "
        f"{'done' if d['review']['done'] else 'open'}",
    ]
    return out


_env: Environment | None = None


def html(review: dict[str, Any], settings: Settings) -> str:
    """A self-contained HTML document (inline styles): it opens from a file, offline."""
    global _env
    if _env is None:
        _env = Environment(
            loader=FileSystemLoader(str(TEMPLATES)),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
    return _env.get_template("review_document.html").render(review=review, r=Render(settings.zone))
