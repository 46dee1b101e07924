"""A site with people, a rotation, external support and channels, for incident tests."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select, update

from nachtwacht.alerts.service import Signal
from nachtwacht.config.loader import parse_config
from nachtwacht.config.schema import Settings
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store

AMS = ZoneInfo("Europe/Amsterdam")

SITE = """
site: vereniging
people:
  contacts:
    - {id: olga, name: Olga Oncall, roles: [oncall_engineer], email: olga@example.org,
       phone: "+31600000001", backup: bert}
    - {id: bert, name: Bert Backup, roles: [devops], email: bert@example.org}
    - {id: tina, name: Tina Techlead, roles: [technical_lead], email: tina@example.org}
    - {id: mark, name: Mark Manager, roles: [management, operations_manager],
       email: mark@example.org}
    - {id: eve, name: Eve Exec, roles: [executives], email: eve@example.org}
  external:
    - {id: hoster, kind: hosting, provider: Hostco, emergency_number: "+31201234567",
       portal: "https://support.hostco.example", account_id: AC-42}
    - {id: dbsupport, kind: database, provider: MariaDB Support, contract_id: C-7}
notify:
  channels:
    mail: {kind: email, host: 127.0.0.1, port: 2525, starttls: false}
    chat: {kind: slack, url: "http://127.0.0.1:9/hook"}
probes:
  - {name: db, kind: tcp, host: 127.0.0.1, port: 3306, component: database, severity: 1}
  - {name: app, kind: tcp, host: 127.0.0.1, port: 8000, component: web, severity: 2,
     depends_on: [db]}
  - {name: db-replica, kind: tcp, host: 127.0.0.1, port: 3307, component: database, severity: 2}
"""


def site(store: Store, extra: str = "") -> Settings:
    return parse_config(f"store:\n  url: {store.url}\n" + SITE + extra, "site.yaml")


def local(*args: int) -> float:
    return datetime(*args, tzinfo=AMS).timestamp()


def probe_signal(
    name: str, component: str, severity: int, at: float, firing: bool = True, **kw: object
) -> Signal:
    return Signal(
        fingerprint=f"probe:{name}",
        source="probe",
        title=name,
        component=component,
        severity=severity,
        firing=firing,
        started_at=at - 60,
        detected_at=at,
        message="cannot connect: Connection refused" if firing else "ok",
        probe_name=name,
        state="critical" if firing else "ok",
        **kw,  # type: ignore[arg-type]
    )


def outbox(store: Store) -> list[dict]:
    with store.connect() as conn:
        return [dict(r) for r in conn.execute(select(t.outbox).order_by(t.outbox.c.id)).mappings()]


def events(store: Store, incident_id: int) -> list[tuple[str, str]]:
    with store.connect() as conn:
        rows = conn.execute(
            select(t.incident_events.c.kind, t.incident_events.c.message)
            .where(t.incident_events.c.incident_id == incident_id)
            .order_by(t.incident_events.c.id)
        ).all()
    return [(r.kind, r.message) for r in rows]


def deliver(store: Store, now: float) -> int:
    """What a sender does to every due message: here it is simply marked sent.

    Escalation tests run no sender; a page still queued when the incident is acknowledged or
    resolved is withdrawn (never sent), so tests about follow-ups deliver the pages first.
    """
    o = t.outbox.c
    with store.begin() as conn:
        return conn.execute(
            update(t.outbox)
            .where(o.status == "pending")
            .values(status="sent", sent_at=now, next_attempt_at=now, attempts=1)
        ).rowcount


def fire_db(store: Store, settings: Settings, now: float) -> int:
    """An S1 probe alert for the database, as the alert worker raises it; the incident id."""
    from nachtwacht.alerts import service as alerts

    with store.begin() as conn:
        out = alerts.process(conn, settings, probe_signal("db", "database", 1, now), now)
    assert out.incident_id is not None
    return out.incident_id


def tick(store: Store, settings: Settings, now: float) -> int:
    """One pass of the escalation module: whatever is due for each incident; messages queued."""
    from nachtwacht.alerts.maintenance import alert_muted_by
    from nachtwacht.incidents import escalation

    with store.connect() as conn:
        due = escalation.due_incidents(conn, now)
    total = 0
    for incident_id in due:
        with store.begin() as conn:
            total += escalation.advance(conn, settings, incident_id, now, alert_muted_by)
    return total
