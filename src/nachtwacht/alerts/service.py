"""The alert pipeline: dedup → maintenance/silence → inhibit → group into incidents → page.

A signal says "this fingerprint is firing" or "has recovered". Firing signals open at most one
alert per fingerprint; alerts of one component join one open incident; a muted alert (in
maintenance, silenced, or inhibited by a failing dependency) is recorded but does not page.
The first escalation step runs in the same transaction that opens the incident, so the page is
in the outbox the moment the failure is confirmed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select, update

from nachtwacht.alerts.maintenance import alert_muted_by, mute_reason
from nachtwacht.config.schema import Settings
from nachtwacht.incidents import escalation
from nachtwacht.incidents import service as incidents
from nachtwacht.meter import Tally
from nachtwacht.store import paging
from nachtwacht.store import tables as t
from nachtwacht.store.db import inserted_id


@dataclass
class Signal:
    fingerprint: str
    source: str  # probe | api | alertmanager
    title: str
    component: str
    severity: int
    firing: bool
    started_at: float  # the first failing observation
    detected_at: float  # when the failure was confirmed
    message: str = ""
    probe_id: int | None = None
    probe_name: str | None = None
    state: str | None = None  # critical | warning, for probe alerts
    inhibited_by: str | None = None  # a failing dependency, computed by the caller
    labels: dict[str, Any] = field(default_factory=dict)
    expected: str = ""  # what the check expects when all is well (a probe's description)
    # a drill's synthetic fault (drills/): it opens its own incident, marked as the drill's,
    # never joins a real one, and is not muted (a drill in a maintenance window still pages)
    drill_id: int | None = None


@dataclass
class Outcome:
    alert_id: int | None
    incident_id: int | None
    action: str  # opened | deduplicated | resolved | ignored
    muted_by: str | None = None
    queued: int = 0


def open_alert(conn: Connection, fingerprint: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(t.alerts).where(
                t.alerts.c.fingerprint == fingerprint, t.alerts.c.status == "firing"
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def list_alerts(
    conn: Connection, status: str, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    """(how many alerts have `status`, or any status for "all"; one page of them, newest first)."""
    a = t.alerts.c
    query = select(t.alerts).order_by(a.fired_at.desc(), a.id.desc())
    if status != "all":
        query = query.where(a.status == status)
    total = paging.count(conn, query)
    rows = conn.execute(paging.window(query, limit, offset)).mappings()
    return total, [dict(r) for r in rows]


# where alerts come from: the label values of the counters below (anything else is "other")
SOURCES = ("probe", "api", "alertmanager", "nachtwacht")
# alerts opened and resolved in this process by (source, raised | resolved), for /metrics;
# counted in the transaction that opens or resolves them (a rollback still counts: rare)
COUNTS = Tally(tuple((s, what) for s in SOURCES for what in ("raised", "resolved")))


def process(conn: Connection, settings: Settings, signal: Signal, now: float) -> Outcome:
    outcome = (
        _fire(conn, settings, signal, now)
        if signal.firing
        else _resolve(conn, settings, signal, now)
    )
    if outcome.action in ("opened", "resolved"):
        source = signal.source if signal.source in SOURCES else "other"
        COUNTS.add((source, "raised" if outcome.action == "opened" else "resolved"))
    return outcome


def _fire(conn: Connection, settings: Settings, sig: Signal, now: float) -> Outcome:
    existing = open_alert(conn, sig.fingerprint)
    if existing is not None:
        conn.execute(
            update(t.alerts)
            .where(t.alerts.c.id == existing["id"])
            .values(last_seen=now, message=sig.message or existing["message"], state=sig.state)
        )
        return Outcome(
            existing["id"], existing["incident_id"], "deduplicated", existing["muted_by"]
        )

    muted_by = None
    if sig.drill_id is not None:
        muted_by = None  # a drill tests the paging: nothing mutes it
    elif sig.inhibited_by:
        muted_by = f"inhibited:{sig.inhibited_by}"
    else:
        muted_by = mute_reason(
            conn,
            settings,
            now,
            probe=sig.probe_name,
            component=sig.component,
            fingerprint=sig.fingerprint,
        )

    incident = None
    if sig.drill_id is not None:
        incident = incidents.open_for_drill(conn, sig.drill_id)
    elif sig.inhibited_by:
        # the dependent's alert joins the outage of what it depends on, when there is one
        cause = open_alert(conn, f"probe:{sig.inhibited_by}")
        if cause is not None and cause["incident_id"] is not None:
            incident = incidents.get_incident(conn, cause["incident_id"])
    if incident is None and sig.drill_id is None:
        incident = incidents.open_for_component(conn, sig.component)

    alert_id = inserted_id(
        conn.execute(
            t.alerts.insert().values(
                fingerprint=sig.fingerprint,
                source=sig.source,
                probe_id=sig.probe_id,
                title=sig.title[:300],
                component=sig.component,
                severity=sig.severity,
                status="firing",
                state=sig.state,
                message=sig.message,
                labels_json=json.dumps(sig.labels) if sig.labels else None,
                started_at=sig.started_at,
                fired_at=sig.detected_at,
                last_seen=now,
                muted_by=muted_by,
                drill_id=sig.drill_id,
            )
        )
    )

    if incident is None:
        incident_id = incidents.open_incident(
            conn,
            settings,
            title=f"{sig.component}: {sig.title}",
            severity=sig.severity,
            now=now,
            component=sig.component,
            origin="alert",
            started_at=sig.started_at,
            detected_at=sig.detected_at,
            impact=_impact(sig),
            muted=muted_by is not None,
            drill_id=sig.drill_id,
        )
    else:
        incident_id = incident["id"]
        if muted_by is None and incident["muted"]:
            # a live failure joined an outage that was muted: it pages now
            conn.execute(
                update(t.incidents).where(t.incidents.c.id == incident_id).values(muted=False)
            )
        if sig.severity < incident["severity"]:
            retitle = incident["origin"] == "alert" and incident["component"] == sig.component
            incidents.set_severity(
                conn,
                settings,
                incident_id,
                sig.severity,
                "nachtwacht",
                now,
                f"{sig.title} joined" + ("; the incident is named after it now" if retitle else ""),
            )
            if retitle:
                # an S1 page must say what made it S1 (a likely compromise, not the scanner
                # whose S3 alert opened the incident); a person's declared title is kept
                incidents.retitle(
                    conn, incident_id, f"{sig.component}: {sig.title}", _impact(sig), now
                )
    conn.execute(update(t.alerts).where(t.alerts.c.id == alert_id).values(incident_id=incident_id))
    note = f"alert: {_with_message(sig.title, sig.message)}"
    if muted_by:
        note += f" (not paging: {muted_by})"
    incidents.add_event(
        conn,
        incident_id,
        now,
        "alert",
        sig.source,
        note,
        {
            "alert_id": alert_id,
            "fingerprint": sig.fingerprint,
            "muted_by": muted_by,
            "started_at": sig.started_at,
            "detected_at": sig.detected_at,
        },
    )
    queued = escalation.advance(conn, settings, incident_id, now, alert_muted_by)
    return Outcome(alert_id, incident_id, "opened", muted_by, queued)


def _with_message(title: str, message: str) -> str:
    # a probe's title already carries its message's first line: say it once
    return f"{title} — {message}" if message and message not in title else title


def _recovered(sig: Signal, fired_title: str) -> str:
    if sig.labels.get("removed"):
        return f"resolved: {fired_title} — {sig.message}"
    if sig.source == "probe":
        # the probe's own words now ("shop-web OK — 200 in 80 ms"), not the failure's title
        return f"recovered: {_with_message(sig.title, sig.message)}"
    return f"recovered: {_with_message(fired_title, sig.message)}"


def _impact(sig: Signal) -> str | None:
    if sig.expected:
        return f"{sig.message or sig.title} (expected: {sig.expected})"
    return sig.message or None


def _resolve(conn: Connection, settings: Settings, sig: Signal, now: float) -> Outcome:
    existing = open_alert(conn, sig.fingerprint)
    if existing is None:
        return Outcome(None, None, "ignored")
    conn.execute(
        update(t.alerts)
        .where(t.alerts.c.id == existing["id"], t.alerts.c.status == "firing")
        .values(status="resolved", resolved_at=now, last_seen=now)
    )
    incident_id = existing["incident_id"]
    queued = 0
    if incident_id is not None:
        incidents.add_event(
            conn,
            incident_id,
            now,
            "alert",
            sig.source,
            _recovered(sig, existing["title"]),
            {"alert_id": existing["id"], "fingerprint": sig.fingerprint},
        )
        still_firing = conn.execute(
            select(t.alerts.c.id).where(
                t.alerts.c.incident_id == incident_id, t.alerts.c.status == "firing"
            )
        ).first()
        inc = incidents.get_incident(conn, incident_id)
        if (
            still_firing is None
            and inc is not None
            and inc["status"]
            in (
                "investigating",
                "mitigating",
                "monitoring",
            )
        ):
            queued = escalation.resolve(
                conn, settings, incident_id, "nachtwacht", now, "every alert has recovered"
            )
    return Outcome(existing["id"], incident_id, "resolved", queued=queued)
