"""Dashboard pages (mounted in web/app.py behind `access`); helpers come from web.render.

- the review panel on the incident page (`/ui/incidents/{id}/review`, loaded by htmx): the
  restoration checklist runs and a button to run it, the review's fields, the follow-ups, and
  links to the review document;
- the review document itself (`/incidents/{id}/review`, `.md`);
- the Reports page (`/reports`): the monthly figures as inline SVG bar charts with tables.

Forms answer with a redirect to the incident page; a refusal renders the panel on a page of
its own with the message and what was typed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from markupsafe import Markup, escape
from sqlalchemy import Connection

from nachtwacht.auth.deps import access, actor
from nachtwacht.checklist import gate
from nachtwacht.checklist import service as checklist
from nachtwacht.checklist.items import Context as ChecklistContext
from nachtwacht.incidents import service as incidents
from nachtwacht.incidents.models import needs_checklist
from nachtwacht.incidents.service import IncidentError
from nachtwacht.reviews import document, followups, monthly, postmortem, service
from nachtwacht.web.headers import policy_for_inline_styles
from nachtwacht.web.render import (
    ActionError,
    PageError,
    RowId,
    _act,
    _form,
    _redirect,
    _show,
    compressed,
)
from nachtwacht.web.state import runtime_of

router = APIRouter(include_in_schema=False, dependencies=[Depends(access)])
PANEL_RUNS = 5


def panel_data(incident_id: int) -> Callable[[Connection, Any, float], dict[str, Any]]:
    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        inc = incidents.get_incident(conn, incident_id)
        if inc is None:
            raise PageError(f"There is no incident #{incident_id}.")
        cfg = rt.settings.reviews
        fields = service.get_fields(conn, incident_id)
        latest = gate.latest_run(conn, incident_id, gate.checklist_since(conn, inc))
        base = inc["resolved_at"]
        return {
            "inc": inc,
            "gated": needs_checklist(inc["severity"]),
            "latest": checklist.view(latest) if latest else None,
            "runs": checklist.list_runs(conn, incident_id, PANEL_RUNS),
            "run_count": checklist.count_runs(conn, incident_id),
            "fields": fields,
            "field_names": [(k, service.LABELS[k]) for k in service.FIELDS],
            "followups": followups.list_followups(conn, now, "all", incident_id),
            "contacts": rt.settings.people.contacts,
            "deadlines": [
                (
                    "Immediate analysis",
                    base + cfg.analysis_within if base else None,
                    service.done(fields, service.ANALYSIS_FIELDS),
                ),
                (
                    "Formal review",
                    base + cfg.review_within if base else None,
                    service.done(fields, service.REVIEW_FIELDS),
                ),
            ],
        }

    return build


@router.get("/ui/incidents/{incident_id}/review", response_class=HTMLResponse)
async def review_panel(request: Request, incident_id: RowId) -> HTMLResponse:
    return await _show(
        request, "_review_panel.html", panel_data(incident_id), fragment=True, form={}
    )


async def _panel_action(
    request: Request, incident_id: int, work: Callable[[Connection, Any, float, dict], Any]
) -> Response:
    form = await _form(request)
    try:
        await _act(request, lambda conn, rt, now: work(conn, rt, now, form))
    except ActionError as exc:
        return await _show(
            request,
            "review_panel_page.html",
            panel_data(incident_id),
            status=exc.status_code,
            error=str(exc),
            form=form,
        )
    return _redirect(f"/incidents/{incident_id}#review-panel")


@router.post("/incidents/{incident_id}/postmortem")
async def save_fields(request: Request, incident_id: RowId) -> Response:
    who = actor(request)

    def work(conn: Connection, rt: Any, now: float, form: dict[str, str]) -> None:
        values: dict[str, str | None] = {k: form[k] for k in service.FIELDS if k in form}
        service.set_fields(conn, incident_id, values, who, now)

    return await _panel_action(request, incident_id, work)


@router.post("/incidents/{incident_id}/followups")
async def add_followup(request: Request, incident_id: RowId) -> Response:
    who = actor(request)

    def work(conn: Connection, rt: Any, now: float, form: dict[str, str]) -> None:
        due = service.parse_due(
            form.get("due", ""), now, rt.settings.zone, rt.settings.business_hours.start
        )
        followups.add(
            conn,
            rt.settings,
            incident_id,
            title=form.get("title", ""),
            owner=form.get("owner", ""),
            due_at=due,
            actor=who,
            now=now,
        )

    return await _panel_action(request, incident_id, work)


@router.post("/incidents/{incident_id}/followups/{followup_id}/done")
async def followup_done(request: Request, incident_id: RowId, followup_id: RowId) -> Response:
    who = actor(request)
    return await _panel_action(
        request,
        incident_id,
        lambda conn, rt, now, form: followups.complete(conn, followup_id, who, now),
    )


@router.post("/incidents/{incident_id}/checklist")
async def run_checklist(request: Request, incident_id: RowId) -> Response:
    """Run the restoration checklist now, in this server, recorded on the incident."""
    await _form(request)
    try:
        await checklist.verify(
            ChecklistContext.in_server(
                runtime_of(request), actor(request), incident_id, request.app
            )
        )
    except IncidentError as exc:
        return await _show(
            request,
            "review_panel_page.html",
            panel_data(incident_id),
            status=exc.http_status,
            error=str(exc),
            form={},
        )
    runtime_of(request).wake_outbox()
    return _redirect(f"/incidents/{incident_id}#review-panel")


# -- the review document -------------------------------------------------------------------------


async def _document(request: Request, incident_id: int, kind: str) -> Response:
    rt = runtime_of(request)
    gzip_ok = "gzip" in request.headers.get("accept-encoding", "")

    def work() -> tuple[str, int]:
        now = rt.clock.now()
        with rt.store.connect() as conn:
            if incidents.get_incident(conn, incident_id) is None:
                return f"There is no incident #{incident_id}.", 404
            review = postmortem.build(conn, rt.settings, incident_id, now)
        if kind == "md":
            return document.markdown(review, rt.settings), 200
        return document.html(review, rt.settings), 200

    text, status = await asyncio.to_thread(work)
    if kind == "md" or status != 200:
        return PlainTextResponse(
            text, status_code=status, media_type="text/markdown; charset=utf-8"
        )
    body, headers = compressed(text.encode(), gzip_ok)
    # its own styles are inside it (it must open offline): allowed by hash, nothing else
    headers["Content-Security-Policy"] = policy_for_inline_styles(text)
    return HTMLResponse(body, headers=headers)


@router.get("/incidents/{incident_id}/review", response_class=HTMLResponse)
async def review_html(request: Request, incident_id: RowId) -> Response:
    return await _document(request, incident_id, "html")


@router.get("/incidents/{incident_id}/review.md")
async def review_markdown(request: Request, incident_id: RowId) -> Response:
    return await _document(request, incident_id, "md")


# -- reports -------------------------------------------------------------------------------------


def bars(
    rows: list[tuple[str, float | None]],
    show: Callable[[float | None], str],
    title: str,
    top: float | None = None,
    long_labels: bool = False,
) -> Markup:
    """A horizontal bar chart as inline SVG: label, bar, value; readable without colour.

    Short labels (months, severities) stand left of their bar. Long labels (issue titles,
    component names) get a line of their own above the bar, across the whole width: squeezed
    into the left column, two issues that start alike could not be told apart on a phone.
    """
    width, label_w, value_w, row_h = 420, 96, 112, 24
    label_y, bar_y = 16, 5
    if long_labels:
        label_w, row_h, label_y, bar_y = 0, 40, 13, 19
    plot = width - label_w - value_w
    biggest = top if top is not None else max((v or 0 for _, v in rows), default=0) or 1
    height = max(row_h * len(rows), row_h)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="{escape(title)}" preserveAspectRatio="xMinYMin meet">'
        f"<title>{escape(title)}</title>"
    ]
    for i, (name, value) in enumerate(rows):
        y = i * row_h
        length = 0 if not value else max(1.0, plot * min(value, biggest) / biggest)
        if long_labels:
            shown = name if len(name) <= 62 else name[:61] + "…"
            label = f'<text x="0" y="{y + label_y}">{escape(shown)}</text>'
        else:
            label = (
                f'<text x="{label_w - 6}" y="{y + label_y}" text-anchor="end">'
                f"{escape(name[:14])}</text>"
            )
        parts.append(
            f'<g data-label="{escape(name)}" data-value="{"" if value is None else value}">'
            f"<title>{escape(name)}: {escape(show(value))}</title>{label}"
            f'<rect x="{label_w}" y="{y + bar_y}" width="{length:.1f}" height="15" rx="2"/>'
            f'<text x="{label_w + length + 5:.1f}" y="{y + bar_y + 11}">'
            f"{escape(show(value))}</text></g>"
        )
    if not rows:
        parts.append('<text x="8" y="17">no data</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _pct(value: float | None) -> str:
    return "no data" if value is None else f"{value * 100:.2f} %"


def _count(value: float | None) -> str:
    return "0" if not value else f"{value:g}"


def _shift(month: str, by: int) -> str:
    year, number = (int(p) for p in month.split("-"))
    y, m = divmod(year * 12 + number - 1 + by, 12)
    return f"{y:04d}-{m + 1:02d}"


@router.get("/reports", response_class=HTMLResponse)
async def reports_page(
    request: Request, month: str | None = Query(None, description="YYYY-MM")
) -> HTMLResponse:
    def build(conn: Connection, rt: Any, now: float) -> dict[str, Any]:
        try:
            data = monthly.report(conn, rt.settings, month or None, now)
        except service.ReviewError as exc:
            raise PageError(str(exc), exc.http_status) from None
        past = monthly.history(conn, rt.settings, data["month"], now)
        span = document.span
        sev = data["by_severity"]
        return {
            "report": data,
            "months": past,
            "previous": _shift(data["month"], -1),
            "following": _shift(data["month"], 1),
            "this_month": datetime.fromtimestamp(now, rt.settings.zone).strftime("%Y-%m"),
            "charts": {
                "severity": bars(
                    [(f"S{s}", sev[s]["count"]) for s in ("1", "2", "3")],
                    _count,
                    f"Incidents by severity in {data['month']}",
                ),
                "per_month": bars(
                    [(m["month"], m["count"]) for m in past], _count, "Incidents per month"
                ),
                "mtta": bars(
                    [(m["month"], m["mtta"]) for m in past], span, "Mean time to acknowledge"
                ),
                "mttr": bars([(m["month"], m["mttr"]) for m in past], span, "Mean time to resolve"),
                "sla": bars(
                    [(m["month"], m["sla_compliance"]) for m in past],
                    _pct,
                    "SLA compliance per month",
                    top=1.0,
                ),
                "uptime": bars(
                    [(u["component"], u["uptime"]) for u in data["uptime"]],
                    _pct,
                    f"Uptime per component in {data['month']}",
                    top=1.0,
                    long_labels=True,
                ),
                "issues": bars(
                    [(f"#{i['id']} {i['title']}", i["events"]) for i in data["top_issues"]],
                    _count,
                    "Top error issues by events",
                    long_labels=True,
                ),
            },
        }

    return await _show(request, "reviews_monthly.html", build)
