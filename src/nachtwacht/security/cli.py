"""The `nachtwacht security` commands: `report` (the security report as Markdown, HTML or JSON).

Generating a report is recorded in the audit log (`security.report`): the next report's "what
changed" compares with this one. A report written to a file is recorded only once the file is
written; one printed is printed after the record is committed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nachtwacht.cli.common import ConfigOption, cli_actor, fail, open_store, settings

security_app = typer.Typer(
    help="Security monitoring of the watched stack: the report.", no_args_is_help=True
)


@security_app.command("report")
def report(
    days: Annotated[int, typer.Option("--days", min=1, max=366, help="Days up to now.")] = 7,
    fmt: Annotated[str, typer.Option("--format", "-f", help="md, html or json.")] = "md",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")
    ] = None,
    actor: Annotated[
        str | None, typer.Option("--actor", help="Who asks for it (default: $USER).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Findings by rule and address, top addresses and paths, logins, blocks, Nachtwacht's own
    audit events, and what changed since the last report."""
    if fmt not in ("md", "html", "json"):
        fail("--format must be md, html or json", 2)
    from nachtwacht.clock import SystemClock
    from nachtwacht.security import report as security_report
    from nachtwacht.security.report_render import render

    cfg = settings(config)
    who = f"cli:{cli_actor(actor)}"
    with open_store(cfg) as store, store.begin() as conn:
        now = SystemClock().now()
        built = security_report.build(conn, now, days, cfg.security)
        text = render(built, fmt, cfg.site, cfg.zone)
        if output is not None:
            try:
                output.parent.mkdir(parents=True, exist_ok=True)
                output.write_text(text, encoding="utf-8")
            except OSError as exc:
                fail(f"cannot write {output}: {exc.strerror or exc}", 1)
        security_report.record(conn, built, who, now, fmt)
    if output is None:
        typer.echo(text, nl=False)
    else:
        typer.echo(f"wrote {output}", err=True)
