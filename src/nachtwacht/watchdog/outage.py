"""Nachtwacht's own trouble through the normal alert pipeline, once the store can take it.

`record_outage`: a store outage that was paged directly (watchdog.storealarm) becomes an S1
incident, opened and resolved at the times they happened, with each direct page on its
timeline. `spool_signal`: the spool above its alarm level while the store is up is an S1 alert
like any other (fingerprint `nachtwacht:spool`), paged through the outbox.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from nachtwacht.alerts import service as alerts
from nachtwacht.alerts import silences
from nachtwacht.config.schema import Settings
from nachtwacht.incidents.service import add_event
from nachtwacht.store.db import Store

FINGERPRINT = "nachtwacht:store"
SPOOL_FINGERPRINT = "nachtwacht:spool"
COMPONENT = "nachtwacht"


def record_outage(
    settings: Settings, store: Store, outage: dict[str, Any], grace: float, now: float
) -> int | None:
    """Record the outage once (engine_meta `watchdog.store_outage.<since>`); the incident id."""
    since = float(outage["since"])
    recovered = float(outage["recovered_at"])
    detected = min(since + grace, recovered)
    key = f"watchdog.store_outage.{int(since)}"
    with store.begin() as conn:
        done = store.get_meta(conn, key)
        if done is not None:
            return done.get("incident_id")  # recorded before a restart lost our note of it
        # the pages went out directly; the silence keeps the pipeline from paging again
        silence = silences.add_silence(
            conn,
            settings,
            matcher=f"fingerprint:{FINGERPRINT}",
            starts_at=detected,
            ends_at=max(recovered, detected + 1.0),
            now=detected,
            created_by="nachtwacht",
            comment="the store was down; its S1 pages were sent directly (watchdog)",
        )
        signal = alerts.Signal(
            fingerprint=FINGERPRINT,
            source="nachtwacht",
            title="store unavailable",
            component=COMPONENT,
            severity=1,
            firing=True,
            started_at=since,
            detected_at=detected,
            message=f"{store.describe()}: {outage.get('error') or 'unreachable'}",
            labels={"silence": silence, "pages": outage["pages"]},
        )
        opened = alerts.process(conn, settings, signal, detected)
        incident_id = opened.incident_id
        if incident_id is not None:
            for delivery in outage["deliveries"]:
                note_delivery(conn, incident_id, delivery)
        signal.firing = False
        signal.message = f"store available again after {words(recovered - since)}"
        alerts.process(conn, settings, signal, recovered)
        store.set_meta(conn, key, {"incident_id": incident_id, "silence": silence}, now)
    return incident_id


def note_delivery(conn: Connection, incident_id: int, d: dict[str, Any]) -> None:
    """One direct page (or its failure) on the incident's timeline, at the time it happened."""
    what = "resolved notice" if d["kind"] == "resolved" else f"page {d['round']}"
    target = f"to {d['channel']}" if d["contact"] is None else f"to {d['who']} by {d['channel']}"
    data = {k: d[k] for k in ("key", "kind", "channel", "contact", "address", "attempts")}
    if d["sent_at"] is not None:
        text = f"{what} sent {target} directly (the store was down)"
        add_event(conn, incident_id, d["sent_at"], "notification_sent", "nachtwacht", text, data)
    else:
        text = f"{what} {target} failed directly: {d['error']}"
        add_event(
            conn, incident_id, d["created_at"], "notification_failed", "nachtwacht", text, data
        )


def spool_signal(settings: Settings, store: Store, spool: Any, firing: bool, now: float) -> None:
    """Raise (or resolve) the spool-near-full S1 alert through the pipeline."""
    limit = settings.spool.alarm_fill
    signal = alerts.Signal(
        fingerprint=SPOOL_FINGERPRINT,
        source="nachtwacht",
        title=f"spool {spool.fill:.0%} full",
        component=COMPONENT,
        severity=1,
        firing=firing,
        started_at=now,
        detected_at=now,
        message=(
            f"{spool.bytes_used / 1e6:.1f} MB of {spool.max_bytes / 1e6:.1f} MB in "
            f"{spool.directory}; past {limit:.0%} new input is at risk of being refused. "
            "Is the drainer failing? See /healthz and the spool's dead/ directory."
        ),
    )
    with store.begin() as conn:
        alerts.process(conn, settings, signal, now)


def words(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
