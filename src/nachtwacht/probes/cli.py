"""`nachtwacht status`, `check` and `probes list`: thin commands over probes.service."""

from __future__ import annotations

import asyncio
import shutil
import textwrap
from datetime import date, datetime, tzinfo
from typing import Annotated, Any

import typer

from nachtwacht.cli.common import ConfigOption, JsonOption, fail, print_json, settings
from nachtwacht.clock import Clock, SystemClock, iso
from nachtwacht.incidents.models import response_label
from nachtwacht.probes import registry, report
from nachtwacht.probes.context import ProbeContext
from nachtwacht.probes.results import CheckResult
from nachtwacht.spool import status as spool_status
from nachtwacht.store.db import Store, StoreError

probes_app = typer.Typer(help="List configured probes.", no_args_is_help=True)
# what `status` takes as now; tests replace it with a FakeClock
CLOCK: Clock = SystemClock()

STATE_MARK = {
    "ok": "OK  ",
    "new": "NEW ",
    "pending": "PEND",
    "warning": "WARN",
    "unknown": "UNKN",
    "critical": "CRIT",
    "degraded": "WARN",
}


def status(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Every component and probe with its state; exit 0 ok, 1 degraded, 2 critical or no store.

    Degraded too when no configured channel reaches anyone on the escalation policies.

    Also the store and the spool as `serve` last saw them: a store that is down while the
    spool fills is critical even when this command can reach the store itself.
    """
    cfg = settings(config)
    store = Store(cfg.store.url)
    clock = CLOCK
    spool = spool_status.offline(
        cfg.spool_dir, cfg.spool.max_bytes, cfg.spool.alarm_fill, clock.now()
    )
    try:
        store.migrate()
        with store.connect() as conn:
            data = report.status_report(conn, clock.now(), cfg.site)
    except StoreError as exc:
        if as_json:
            print_json(
                {
                    "site": cfg.site,
                    "overall": "critical",
                    "level": 2,
                    "error": str(exc),
                    "spool": spool,
                }
            )
        # one line still: what serve says about the store and how full the spool is
        serve = spool.get("serve")
        extra = ""
        if (serve is not None and not serve["stale"]) or spool["bytes"] or spool["dead"]:
            extra = f" ({_spool_line(spool)})"
        fail(f"cannot read the store: {exc}{extra}", 2)
    finally:
        store.dispose()
    data["spool"] = spool
    report.add_paging(data, cfg)
    level = _spool_level(spool)
    if level > data["level"]:
        data["level"] = level
        data["overall"] = report.OVERALL[level]
    if as_json:
        print_json(data)
    else:
        # a pipe or a file gets 80 columns, as a terminal nobody resized
        _print_status(data, cfg.zone, max(shutil.get_terminal_size((80, 24)).columns, 40))
    raise typer.Exit(data["level"])


def _spool_level(spool: dict) -> int:
    serve = spool.get("serve")
    if serve is not None and not serve["stale"] and not serve["store"]["available"]:
        return 2
    if spool["alarm"]:
        return 2
    if serve is not None and not serve["stale"] and spool_status.failing(serve):
        return 2
    return 1 if spool["dead"] else 0


def _spool_line(spool: dict) -> str:
    """`store DOWN since ...; spool 12.0 MB waiting (1.2% of 1073.7 MB used)`."""
    serve = spool.get("serve")
    if serve is not None and not serve["stale"]:
        line = "serve: " + spool_status.describe(serve)
    else:
        line = (
            f"spool {spool['dir']}: {spool_status.megabytes(spool['bytes'])} on disk "
            f"({spool['fill']:.1%} of {spool_status.megabytes(spool['max_bytes'])})"
        )
    if spool["dead"]:
        line += f"; {spool['dead']} rejected record(s) in {spool['dir']}/dead"
    return line


def _print_status(data: dict, zone: tzinfo, width: int) -> None:
    """The report in lines no longer than `width`, times in the site's zone.

    A probe's row keeps its columns; what does not fit goes on lines below it, indented.
    """
    out = _Lines(width)
    today = _local(data["generated_at"], zone).date()
    out.say(f"{data['site']}: {data['overall'].upper()}  ({_clock(data['generated_at'], zone)})")
    for problem in data.get("paging", {}).get("problems", []):
        out.say(f"  PAGING BROKEN: {problem}", indent=4)
    if not data.get("engine_running", True):
        seen = data.get("engine_last_seen")
        out.say(
            "  THE MONITOR IS NOT RUNNING: no engine has reported "
            + (f"since {_when(seen, zone, today)}" if seen else "yet")
            + "; start `nachtwacht serve` (states below are history)",
            indent=4,
        )
    if not data["components"]:
        out.say("  no probes have run yet (is `nachtwacht serve` running?)", indent=4)
    probes = [p for comp in data["components"] for p in comp["probes"]]
    name_width = min(max((len(p["name"]) for p in probes), default=0), 28)
    kind_width = max((len(p["kind"]) for p in probes), default=0)
    for comp in data["components"]:
        out.say(f"\n[{STATE_MARK.get(comp['state'], comp['state'])}] {comp['name']}", indent=7)
        for p in comp["probes"]:
            age = "never" if p["age_seconds"] is None else f"{_age(p['age_seconds'])} ago"
            if p.get("stale"):
                age += " STALE"
            out.row(
                f"  {STATE_MARK.get(p['state'], p['state'])}  {p['name']:<{name_width}}",
                f"{p['kind']:<{kind_width}} {age:<8}",
                p["message"] or "",
            )
    if data.get("incidents"):
        out.say("\nopen incidents")
        for inc in data["incidents"]:
            label = response_label(inc["acknowledged"], inc["response_overdue"])
            due = _when(inc["response_due_at"], zone, today)
            if inc["acknowledged"]:
                note = ""
            elif inc["response_overdue"]:
                note = f" (nobody acknowledged by {due})"
            else:
                note = f" (respond by {due})"
            lead = f"  #{inc['id']:<4} S{inc['severity']} {inc['status']:<13} {label:<7} "
            out.say(lead + inc["title"] + note, indent=len(lead) if width - len(lead) >= 30 else 6)
    if data.get("agents"):
        out.say("\nagents")
        for agent in data["agents"]:
            mark = "SILENT" if agent["silent"] else "ok    "
            age = _age(agent["seconds_since_contact"])
            out.say(f"  {mark} {agent['location']:<16} last contact {age} ago", indent=4)
    spool = data.get("spool")
    serve = spool.get("serve") if spool else None
    waiting = serve is not None and not serve["stale"] and serve["spool"]["backlog_bytes"] > 0
    if spool is not None and (_spool_level(spool) or waiting):
        out.say(f"\n{_spool_line(spool)}", indent=2)
    members = data.get("members") or []
    if len(members) > 1 or any(m["dead"] for m in members):
        out.say("\nmembers")
        for m in members:
            mark = "DEAD" if m["dead"] else "    "
            beat = _when(m["last_heartbeat"], zone, today)
            out.say(
                f"  {mark} {m['id']:<28} {m['role']:<6} {m['probes_owned']:>6} probes  "
                f"heartbeat {beat}",
                indent=8,
            )
    bad = [m for m in data["engine"] if not m["healthy"]]
    for m in bad:
        out.say(f"\nengine module {m['module']} degraded: {m['last_error']}", indent=2)


class _Lines:
    """Echo text wrapped to a width: prose at word boundaries, table rows column by column."""

    def __init__(self, width: int) -> None:
        self.width = width

    def say(self, text: str, indent: int = 2) -> None:
        for block in text.split("\n"):
            # a block's own leading blanks stay (textwrap keeps them); a break indents more
            lines = textwrap.wrap(
                block, self.width, subsequent_indent=" " * indent, break_on_hyphens=False
            )
            lines = lines or [""]
            for line in lines:
                typer.echo(line)

    def row(self, head: str, columns: str, message: str) -> None:
        whole = f"{head} {columns} {message}".rstrip()
        if len(whole) <= self.width:
            typer.echo(whole)
            return
        first = f"{head} {columns}".rstrip()
        if len(first) <= self.width:
            typer.echo(first)
            rest = message
        else:
            typer.echo(_cut(head.rstrip(), self.width))
            rest = f"{columns.strip()} {message}"
        for line in textwrap.wrap(
            rest,
            self.width,
            initial_indent=" " * 8,
            subsequent_indent=" " * 8,
            break_on_hyphens=False,
        ):
            typer.echo(line)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _local(value: str, zone: tzinfo) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(zone)


def _clock(value: str, zone: tzinfo) -> str:
    """The report's time in full: `2026-12-08 03:12 CET`."""
    return _local(value, zone).strftime("%Y-%m-%d %H:%M %Z")


def _when(value: str, zone: tzinfo, today: date) -> str:
    """A time of the report: `03:12` today, `2026-12-07 23:50` on another day."""
    local = _local(value, zone)
    return local.strftime("%H:%M" if local.date() == today else "%Y-%m-%d %H:%M")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def check(
    names: Annotated[list[str] | None, typer.Argument(help="Probes to run (default: all).")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run probes once, now, and print the results; no server needed."""
    cfg = settings(config)
    wanted = [p for p in cfg.probes if p.enabled]
    if names:
        known = {p.name for p in cfg.probes}
        missing = [n for n in names if n not in known]
        if missing:
            fail(f"no probe named {', '.join(missing)}; see `nachtwacht probes list`", 2)
        wanted = [p for p in cfg.probes if p.name in names]
    results = asyncio.run(_run_checks(wanted, cfg))
    rows: list[dict[str, Any]] = [
        {
            "name": p.name,
            "kind": p.kind,
            "component": p.component,
            "status": r.status.label,
            "value": r.value,
            "latency_ms": None if r.latency_ms is None else round(r.latency_ms, 2),
            "message": r.message,
        }
        for p, r in zip(wanted, results, strict=True)
    ]
    if as_json:
        print_json(rows)
    else:
        for row in rows:
            typer.echo(
                f"{STATE_MARK[row['status']]}  {row['name']:<28} {row['kind']:<9} {row['message']}"
            )
    worst = max((report.SEVERITY[r["status"]] for r in rows), default=0)
    raise typer.Exit(worst)


async def _run_checks(configs: list, cfg) -> list[CheckResult]:  # noqa: ANN001
    store = Store(cfg.store.url)
    ctx = ProbeContext(clock=SystemClock(), store=store)
    probes = [registry.build(p, ctx) for p in configs]
    try:
        return list(await asyncio.gather(*(p.run() for p in probes)))
    finally:
        for p in probes:
            await p.close()
        await ctx.close()
        store.dispose()


@probes_app.command("list")
def list_probes(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The probes in the config, with kind, component, interval and dependencies."""
    cfg = settings(config)
    rows: list[dict[str, Any]] = [
        {
            "name": p.name,
            "kind": p.kind,
            "component": p.component,
            "interval": p.interval,
            "timeout": p.timeout,
            "retries": p.retries,
            "severity": p.severity,
            "depends_on": p.depends_on,
            "enabled": p.enabled,
        }
        for p in cfg.probes
    ]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        deps = f" depends on {', '.join(r['depends_on'])}" if r["depends_on"] else ""
        off = "" if r["enabled"] else " (disabled)"
        typer.echo(
            f"{r['name']:<28} {r['kind']:<9} {r['component']:<14} every {r['interval']:g}s "
            f"S{r['severity']}{deps}{off}"
        )


__all__ = ["check", "iso", "list_probes", "probes_app", "status"]
