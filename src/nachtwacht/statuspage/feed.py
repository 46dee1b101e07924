"""The Atom feed (RFC 4287) of published notices: what a feed reader subscribes to."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

from sqlalchemy import Connection, select

from nachtwacht.config.schema import Settings
from nachtwacht.statuspage.service import notice_view, public_url, title
from nachtwacht.store import tables as t

ATOM = "http://www.w3.org/2005/Atom"
ENTRIES = 50


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def latest(conn: Connection, limit: int = ENTRIES) -> list[dict[str, Any]]:
    n = t.status_notices.c
    rows = conn.execute(
        select(t.status_notices)
        .where(n.state == "published")
        .order_by(n.published_at.desc(), n.id.desc())
        .limit(limit)
    ).mappings()
    return [notice_view(r) for r in rows]


def render(settings: Settings, notices: list[dict[str, Any]], now: float) -> bytes:
    base = public_url(settings)
    ET.register_namespace("", ATOM)

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        el = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        if text is not None:
            el.text = text
        return el

    feed = ET.Element(f"{{{ATOM}}}feed")
    sub(feed, "id", f"{base}/feed.atom")
    sub(feed, "title", title(settings))
    sub(feed, "updated", _when(notices[0]["published_at"] if notices else now))
    sub(feed, "link", rel="self", href=f"{base}/feed.atom", type="application/atom+xml")
    sub(feed, "link", rel="alternate", href=base, type="text/html")
    author = sub(feed, "author")
    sub(author, "name", title(settings))
    for notice in notices:
        entry = sub(feed, "entry")
        sub(entry, "id", f"{base}/notices/{notice['id']}")
        sub(entry, "title", notice["title"])
        sub(entry, "updated", _when(notice["published_at"]))
        sub(entry, "published", _when(notice["published_at"]))
        sub(entry, "link", rel="alternate", href=f"{base}#notice-{notice['id']}", type="text/html")
        for name in notice["components"]:
            sub(entry, "category", term=name)
        affected = ", ".join(notice["components"]) or "all services"
        text = f"Status: {notice['public_status']}\nAffected: {affected}\n\n{notice['body']}"
        sub(entry, "content", text, type="text")
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(feed, encoding="utf-8")
