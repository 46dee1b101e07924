"""Alerts for error issues: a new issue or a regression, per project rule (decision 21).

The obligation is the issue's `alert_due` column (`new`, `regression` or `resolved`), written
in the transaction that creates, reopens, resolves or ignores the issue (`service.store_events`,
`issues.set_status`). `handle` claims it with a conditional update that clears it
(`nachtwacht.store.claims`) in the transaction that raises or resolves the alert through the
pipeline (`alerts.service.process`: dedup, muting, grouping, paging). A process that dies
between the event's commit and the alert leaves the column set, and the next pass raises it;
two workers racing for one issue: the second claim changes no row, so nothing is raised twice.

The alert's fingerprint is the issue's (`error-issue:<id>`): a thousand events of one new
issue are one alert. Its component is the project's name (or the rule's `component`), so a
storm of new issues in one project joins one incident and pages once. A storm is also capped:
with the rule's `max_alerts` issue alerts of the component fired within the last hour and
firing, the next ones are folded into one alert per component (`error-storm:<component>`),
whose message names the latest and links to the project's issue list, so 500 new issues are 21
alerts on the timeline, not 500. A storm alert older than an hour is resolved when the next
fold comes, so a later storm is a new alert (and pages, if its incident is over).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, func, select

from nachtwacht.alerts import service as pipeline
from nachtwacht.alerts.service import Outcome, Signal
from nachtwacht.config import limits
from nachtwacht.config.schema import Settings
from nachtwacht.store import claims
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store

log = logging.getLogger(__name__)

SOURCE = "errors"
PREFIX = "error-issue:"
STORM = "error-storm:"
STORM_WINDOW = 3600.0  # alerts fired within this count towards the storm cap
BATCH = 500  # issues read at once
KINDS = ("new", "regression", "resolved")

_I, _P, _E = t.error_issues.c, t.error_projects.c, t.error_events.c
DUE = (
    select(
        _I.id,
        _I.alert_due,
        _I.alert_due_at,
        _I.title,
        _I.level,
        _I.status,
        _I.count,
        _I.environment,
        _I.first_release,
        _I.last_event_id,
        _I.project_id,
        _P.name.label("project"),
    )
    .join(t.error_projects, _P.id == _I.project_id)
    .where(_I.alert_due.is_not(None))
    .order_by(_I.alert_due_at, _I.id)
)


def fingerprint(issue_id: int) -> str:
    return f"{PREFIX}{issue_id}"


def issue_url(settings: Settings, issue_id: int) -> str:
    """The issue's page, where the alert sends whoever reads it."""
    return f"{str(settings.incidents.public_url).rstrip('/')}/errors/{issue_id}"


def due(conn: Connection, limit: int = BATCH) -> list[Any]:
    """Issues with an alert to raise or resolve, oldest obligation first."""
    return list(conn.execute(DUE.limit(limit)).all())


def claim(conn: Connection, issue_id: int, kind: str) -> bool:
    """Take the issue's obligation in the caller's transaction; False if it is not ours.

    The condition is the kind that was read: one another worker took (cleared), or one a later
    commit replaced (a regression after a resolution), is left for whoever reads it next.
    """
    return claims.claim(
        conn,
        t.error_issues,
        issue_id,
        _I.alert_due == kind,
        values={"alert_due": None, "alert_due_at": None},
    )


def _release(conn: Connection, row: Any) -> str | None:
    if row.last_event_id is None:
        return row.first_release
    found = conn.execute(
        select(_E.release).where(_E.project_id == row.project_id, _E.event_id == row.last_event_id)
    ).scalar_one_or_none()
    return found or row.first_release


def signal_for(conn: Connection, settings: Settings, row: Any, now: float) -> Signal | None:
    """The signal an issue's obligation means under its project's rule (None: no alert)."""
    rule = settings.errors.rule_for(row.project)
    component = rule.component or row.project
    url = issue_url(settings, row.id)
    base: dict[str, Any] = {
        "fingerprint": fingerprint(row.id),
        "source": SOURCE,
        "component": component[: limits.NAME],
        "detected_at": now,
    }
    if row.alert_due == "resolved":
        return Signal(
            title=row.title,
            severity=3,
            firing=False,
            started_at=now,
            message=f"issue #{row.id} {row.status} — {url}",
            **base,
        )
    if row.status != "unresolved" or not rule.wants(row.level):
        return None
    if row.alert_due == "regression":
        if not rule.regression:
            return None
        word, severity = "Regression", rule.regression_severity
    elif row.alert_due == "new":
        if not rule.new_issue or (row.alert_due_at or now) < now - rule.new_issue_max_age:
            return None
        word, severity = "New issue", rule.new_issue_severity
    else:
        log.warning("issue %d: unknown alert_due %r dropped", row.id, row.alert_due)
        return None
    release = _release(conn, row)
    seen = f", release {release}" if release else ""
    env = f" in {row.environment}" if row.environment else ""
    # a storm is a burst: alerts left firing for days (issues nobody resolves) do not count
    if _firing(conn, base["component"], now - STORM_WINDOW) >= rule.max_alerts:
        listing = f"{str(settings.incidents.public_url).rstrip('/')}/errors?project={row.project}"
        return Signal(
            title=f"More new issues and regressions in {row.project}"[: limits.TITLE],
            severity=severity,
            firing=True,
            started_at=min(row.alert_due_at or now, now),
            message=(
                f"over {rule.max_alerts} issue alerts firing; the latest: "
                f"{word.lower()} #{row.id} {row.title[:200]} — {url} (all: {listing})"
            ),
            labels={"project": row.project, "url": listing},
            **{**base, "fingerprint": f"{STORM}{base['component']}"[:200]},
        )
    return Signal(
        title=f"{word} in {row.project}: {row.title}"[: limits.TITLE],
        severity=severity,
        firing=True,
        started_at=min(row.alert_due_at or now, now),
        message=f"issue #{row.id} ({row.level}{env}{seen}, {row.count} events) — {url}",
        labels={
            "issue_id": row.id,
            "project": row.project,
            "kind": row.alert_due,
            "url": url,
            **({"release": release} if release else {}),
        },
        **base,
    )


def _firing(conn: Connection, component: str, since: float | None = None) -> int:
    """How many issue alerts of `component` are firing (fired at or after `since`)."""
    a = t.alerts.c
    query = select(func.count()).where(
        a.status == "firing", a.component == component, a.fingerprint.startswith(PREFIX)
    )
    if since is not None:
        query = query.where(a.fired_at >= since)
    return int(conn.execute(query).scalar() or 0)


def handle(conn: Connection, settings: Settings, row: Any, now: float) -> Outcome | None:
    """Claim one issue's obligation and raise or resolve its alert, in `conn`'s transaction."""
    if not claim(conn, row.id, row.alert_due):
        return None  # another worker has it, or a later commit replaced it
    signal = signal_for(conn, settings, row, now)
    if signal is None:
        return None
    if signal.fingerprint.startswith(STORM):
        stale = pipeline.open_alert(conn, signal.fingerprint)
        if stale is not None and stale["fired_at"] < now - STORM_WINDOW:
            # an old storm's alert would swallow this one without a page: a new storm
            over = replace(signal, firing=False, message="a new storm began")
            pipeline.process(conn, settings, over, now)
    outcome = pipeline.process(conn, settings, signal, now)
    if not signal.firing and _firing(conn, signal.component) == 0:
        # the storm is over once no issue alert of the component fires any more
        storm = Signal(
            fingerprint=f"{STORM}{signal.component}"[:200],
            source=SOURCE,
            title=signal.title,
            component=signal.component,
            severity=3,
            firing=False,
            started_at=now,
            detected_at=now,
            message="every issue alert of the storm is resolved",
        )
        pipeline.process(conn, settings, storm, now)
    return outcome


@dataclass
class Pass:
    handled: int = 0  # obligations claimed by this pass
    opened: int = 0  # alerts opened
    queued: int = 0  # pages queued


def handle_due(store: Store, settings: Settings, now: float, batch: int = BATCH) -> Pass:
    """Every issue with an alert due, one transaction each; an issue that fails is retried on
    the next pass (its column stays set) and does not stop the others."""
    out = Pass()
    failed: set[int] = set()
    while True:
        with store.connect() as conn:
            rows = [r for r in due(conn, batch + len(failed)) if r.id not in failed]
        if not rows:
            break
        for row in rows[:batch]:
            try:
                with store.begin() as conn:
                    outcome = handle(conn, settings, row, now)
            except Exception:
                failed.add(row.id)
                log.exception("alert for error issue %d failed; retrying", row.id)
                continue
            out.handled += 1
            if outcome is not None:
                out.opened += outcome.action == "opened"
                out.queued += outcome.queued
        if len(rows) < batch:
            break
    return out
