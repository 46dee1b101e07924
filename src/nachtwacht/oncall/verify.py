"""Contact verification: a confirm link per contact and channel, proving the channel reaches them.

The protocol asks to validate contact information monthly and to assess it every quarter.
`send` queues one short message per (contact, channel) through the outbox, carrying a link
with an unguessable token; only the token's SHA-256 is stored, and the link expires after
`people.verification.link_valid`. Following the link shows a button (GET changes nothing, so a
mail client's link scanner confirms nothing); pressing it (POST) confirms, by a conditional
update of that link's row. A confirmation counts for the address it was sent to: a changed
e-mail or phone in the config is unverified again. One older than
`people.verification.every` is stale, and `reverify` (an engine module) sends a new link once
per period.

Channels that reach a person: e-mail (their `email`), SMS (their `phone`) and chat channels
(slack, mattermost, teams) when they have a `chat` handle, which the post mentions. A generic
webhook reaches a system, not a person, and is not verified.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, insert, select, update

from nachtwacht.config.schema import Settings
from nachtwacht.notify.compose import fit
from nachtwacht.notify.outbox import OutboundMessage, enqueue
from nachtwacht.oncall.models import Contact
from nachtwacht.problems import Kind, Problem
from nachtwacht.store import tables as t
from nachtwacht.store.db import inserted_id
from nachtwacht.store.obligations import once

v = t.contact_verifications.c
CHAT_KINDS = ("slack", "mattermost", "teams")
KIND_WORDS = {
    "email": "e-mail",
    "sms": "SMS",
    "slack": "chat",
    "mattermost": "chat",
    "teams": "chat",
}
PATH = "/verify/"
# SMS bodies must stay short: the link and a few words
SMS_TEXT = "{site}: confirm this number reaches you for on-call pages:"


class VerifyError(Problem):
    """No such contact or channel, a link that is unknown or expired, no public URL."""

    def __init__(self, message: str, field: str = "contact", kind: Kind = "invalid") -> None:
        super().__init__(message, field, kind)


@dataclass(frozen=True)
class Route:
    """A channel that reaches a contact personally, and the address it reaches them at."""

    contact: Contact
    channel: str
    kind: str  # the channel's kind: email | sms | slack | mattermost | teams
    address: str

    @property
    def words(self) -> str:
        return KIND_WORDS.get(self.kind, self.kind)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def routes(settings: Settings, contact: Contact, channel: str | None = None) -> list[Route]:
    """The channels that reach `contact` personally (only `channel`, when given)."""
    out = []
    for name, cfg in settings.notify.channels.items():
        if channel is not None and name != channel and cfg.kind != channel:
            continue
        address = None
        if cfg.kind == "email":
            address = contact.email
        elif cfg.kind == "sms":
            address = contact.phone
        elif cfg.kind in CHAT_KINDS:
            address = contact.chat
        if address:
            out.append(Route(contact, name, cfg.kind, address))
    return out


def base_url(settings: Settings) -> str:
    """Where confirm links point; refused unless `incidents.public_url` was set explicitly.

    The default (this server's own listen address) reaches only this machine: a link in an
    e-mail opened on a phone would never confirm anything.
    """
    url = settings.incidents.public_url
    host = (urlsplit(url).hostname or "").lower()
    explicit = "public_url" in settings.incidents.model_fields_set
    if not explicit or host == "localhost" or host.startswith("127.") or host == "::1":
        said = (
            f"incidents.public_url is {url}, which only this machine opens"
            if explicit
            else "incidents.public_url is not set"
        )
        raise VerifyError(
            f"{said}: confirm links would point at {url}; set incidents.public_url in "
            "nachtwacht.yaml to the address people open from their phones "
            "(docs/people.md#verified-contacts)",
            "public_url",
        )
    return url.rstrip("/")


def _targets(settings: Settings, contact: str | None, channel: str | None) -> list[Route]:
    people = settings.people.contacts
    if contact is not None:
        found = settings.people.contact(contact)
        if found is None:
            known = ", ".join(c.id for c in people) or "none configured"
            raise VerifyError(f"no contact '{contact}' (contacts: {known})", kind="not_found")
        people = [found]
    if channel is not None:
        kinds = {c.kind for c in settings.notify.channels.values()}
        if channel not in settings.notify.channels and channel not in kinds:
            known = ", ".join(settings.notify.channels) or "none configured"
            raise VerifyError(
                f"no channel or channel kind '{channel}' (channels: {known})",
                "channel",
                "not_found",
            )
    found_routes = [r for c in people for r in routes(settings, c, channel)]
    if not found_routes:
        raise VerifyError(
            "no channel reaches "
            + (f"'{contact}'" if contact else "any contact")
            + (f" through '{channel}'" if channel else "")
            + ": give contacts an email, phone or chat handle and configure a channel of that kind",
            "channel" if channel else "contact",
        )
    return found_routes


def send(
    conn: Connection,
    settings: Settings,
    now: float,
    *,
    contact: str | None = None,
    channel: str | None = None,
    reason: str = "manual",
    only: Iterable[Route] | None = None,
) -> list[dict[str, Any]]:
    """Queue a confirm link to each contact on each channel that reaches them; what was queued.

    An earlier link of the same contact and channel that was not followed is replaced: only
    the newest one confirms.
    """
    url = base_url(settings)
    targets = list(only) if only is not None else _targets(settings, contact, channel)
    valid = float(settings.people.verification.link_valid)
    out = []
    for route in targets:
        conn.execute(
            update(t.contact_verifications)
            .where(v.contact == route.contact.id, v.channel == route.channel, v.status == "sent")
            .values(status="replaced")
        )
        token = secrets.token_urlsafe(24)  # 192 bits
        row_id = inserted_id(
            conn.execute(
                insert(t.contact_verifications).values(
                    contact=route.contact.id,
                    channel=route.channel,
                    address=route.address[:320],
                    token_hash=token_hash(token),
                    status="sent",
                    reason=reason,
                    created_at=now,
                    expires_at=now + valid,
                )
            )
        )
        message = _message(settings, route, f"{url}{PATH}{token}", now, valid, row_id)
        outbox_id = next(iter(enqueue(conn, [message], now)), None)
        conn.execute(
            update(t.contact_verifications).where(v.id == row_id).values(outbox_id=outbox_id)
        )
        out.append(
            {
                "id": row_id,
                "contact": route.contact.id,
                "name": route.contact.name,
                "channel": route.channel,
                "kind": route.kind,
                "address": route.address,
                "expires_at": now + valid,
                "outbox_id": outbox_id,
            }
        )
    return out


def _message(
    settings: Settings, route: Route, url: str, now: float, valid: float, row_id: int
) -> OutboundMessage:
    until = datetime.fromtimestamp(now + valid, settings.zone).strftime("%Y-%m-%d %H:%M %Z")
    subject = f"{settings.site}: confirm your {route.words} for on-call pages"
    if route.kind == "sms":
        cfg = settings.notify.channels[route.channel]
        room = max(int(getattr(cfg, "max_length", 480)) - len(url) - 1, 20)
        # the words are cut to fit, never the link
        body = f"{fit(SMS_TEXT.format(site=settings.site), None, room)} {url}"
    else:
        greeting = route.address if route.kind in CHAT_KINDS else route.contact.name
        body = (
            f"{greeting},\n\n"
            f"Nachtwacht at {settings.site} pages you through this {route.words} channel "
            f"({route.address}) in an emergency. Please confirm that it reaches you: open\n\n"
            f"    {url}\n\n"
            f"and press Confirm. The link works until {until}. Nothing else is needed; "
            "if this was not meant for you, ignore it."
        )
    return OutboundMessage(
        idempotency_key=f"verify:{row_id}",
        kind="verification",
        channel=route.channel,
        subject=subject,
        body=body,
        contact=route.contact.id,
        address=None if route.kind in CHAT_KINDS else route.address,
        payload={"kind": "verification", "contact": route.contact.id},
    )


def lookup(conn: Connection, token: str, now: float) -> dict[str, Any]:
    """The link's row, for the confirm page; raises VerifyError for an unusable link."""
    if not token or len(token) > 100:
        raise VerifyError("unknown or expired link", "token", "not_found")
    row = (
        conn.execute(select(t.contact_verifications).where(v.token_hash == token_hash(token)))
        .mappings()
        .first()
    )
    if row is None:
        raise VerifyError("unknown or expired link", "token", "not_found")
    found = dict(row)
    if found["status"] == "replaced":
        raise VerifyError("this link was replaced by a newer one: use the newest", "token")
    if found["status"] == "sent" and found["expires_at"] <= now:
        raise VerifyError("this link has expired: ask for a new one", "token")
    return found


def confirm(conn: Connection, token: str, now: float) -> dict[str, Any]:
    """Confirm the link's contact and channel now; a link confirmed before stays as it was."""
    found = lookup(conn, token, now)
    if found["status"] == "confirmed":
        return found
    won = conn.execute(
        update(t.contact_verifications)
        .where(v.id == found["id"], v.status == "sent", v.expires_at > now)
        .values(status="confirmed", confirmed_at=now)
    ).rowcount
    if won != 1:
        return lookup(conn, token, now)  # confirmed (or replaced) meanwhile: say which
    return {**found, "status": "confirmed", "confirmed_at": now}


# -- state ---------------------------------------------------------------------------------------


def state(conn: Connection | None, settings: Settings, now: float) -> list[dict[str, Any]]:
    """Every contact's personal channels with their verification: verified | stale | pending |
    unverified, and when it was confirmed (None: never, at the current address)."""
    every = float(settings.people.verification.every)
    rows: list[Any] = []
    if conn is not None:
        rows = list(
            conn.execute(
                select(
                    v.contact, v.channel, v.address, v.status, v.confirmed_at, v.expires_at
                ).where(v.status.in_(("sent", "confirmed")))
            )
        )
    confirmed: dict[tuple[str, str, str], float] = {}
    pending: dict[tuple[str, str, str], float] = {}
    for r in rows:
        key = (r.contact, r.channel, r.address or "")
        if r.status == "confirmed" and r.confirmed_at is not None:
            confirmed[key] = max(confirmed.get(key, 0.0), r.confirmed_at)
        elif r.status == "sent" and r.expires_at > now:
            pending[key] = max(pending.get(key, 0.0), r.expires_at)
    out = []
    for contact in settings.people.contacts:
        for route in routes(settings, contact):
            key = (contact.id, route.channel, route.address)
            at = confirmed.get(key)
            if at is not None and now - at <= every:
                status = "verified"
            elif key in pending:
                status = "pending"
            elif at is not None:
                status = "stale"
            else:
                status = "unverified"
            out.append(
                {
                    "contact": contact.id,
                    "name": contact.name,
                    "roles": list(contact.roles),
                    "channel": route.channel,
                    "kind": route.kind,
                    "words": route.words,
                    "address": route.address,
                    "status": status,
                    "verified_at": at,
                    "link_expires_at": pending.get(key),
                }
            )
    return out


def problems(entries: list[dict[str, Any]]) -> list[str]:
    """`Tina Techlead (technical lead): SMS unverified`, one line per channel not verified."""
    out = []
    for e in entries:
        if e["status"] == "verified":
            continue
        roles = ", ".join(r.replace("_", " ") for r in e["roles"])
        who = f"{e['name']} ({roles})" if roles else e["name"]
        what = {"stale": "not confirmed for too long", "pending": "link sent, not confirmed"}.get(
            e["status"], "unverified"
        )
        out.append(f"{who}: {e['words']} {what}")
    return out


def by_contact(entries: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        grouped.setdefault(e["contact"], []).append(e)
    return grouped


def reverify(conn: Connection, settings: Settings, now: float) -> list[dict[str, Any]]:
    """Send a new link to each channel whose confirmation went stale, once per period.

    A channel never confirmed is not sent to unasked (`nachtwacht contacts verify` does that,
    and `doctor` and the on-call page show it as unverified).

    The period is `people.verification.every` counted from the epoch; its obligation row
    (`reverify:<contact>:<channel>:<period>`) is claimed before the link is queued, in one
    transaction, so two engines never both send it. A channel with a link still open is left
    alone until that link expires.
    """
    cfg = settings.people.verification
    if not cfg.auto:
        return []
    try:
        base_url(settings)
    except VerifyError:
        return []  # doctor says why; links to nowhere would only confuse people
    period = int(now // float(cfg.every))
    due = [e for e in state(conn, settings, now) if e["status"] == "stale"]
    sent: list[dict[str, Any]] = []
    for e in due:
        key = f"reverify:{e['contact']}:{e['channel']}:{period}"
        if not once(conn, key, "reverify", now, {"status": e["status"]}):
            continue
        contact = settings.people.contact(e["contact"])
        if contact is None:
            continue
        only = [r for r in routes(settings, contact) if r.channel == e["channel"]]
        sent += send(conn, settings, now, reason="periodic", only=only)
    return sent
