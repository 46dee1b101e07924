"""A site with a public status page, for the status-page tests."""

from __future__ import annotations

from sqlalchemy import select

from nachtwacht.config.schema import Settings
from nachtwacht.incidents import service as incidents
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.incident_fixtures import site

STATUS = """
status_page:
  enabled: true
  title: Vereniging status
  contact: support@vereniging.example
  public_url: https://status.vereniging.example
  components:
    Member database: database
    Website: [web]
"""
# what must never reach the public: probe targets, probe messages, people, internal titles
INTERNAL = (
    "127.0.0.1",
    "3306",
    "Connection refused",
    "Olga",
    "olga@example.org",
    "Mark Manager",
    "mark@example.org",
    "+31600000001",
    "Tina",
    "Hostco",
)


def status_site(store: Store, extra: str = "") -> Settings:
    return site(store, STATUS + extra)


def make_commander(store: Store, incident_id: int, contact: str, now: float) -> None:
    with store.begin() as conn:
        incidents.assign(conn, incident_id, contact, "commander", "test", now)


def outbox_of(store: Store, kind: str) -> list[dict]:
    with store.connect() as conn:
        rows = conn.execute(
            select(t.outbox).where(t.outbox.c.kind == kind).order_by(t.outbox.c.id)
        ).mappings()
        return [dict(r) for r in rows]
