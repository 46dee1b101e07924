"""Subscribers: e-mail with double opt-in, webhooks added by an admin, and the fan-out.

- Anyone may ask for e-mail; only a confirmed address is ever sent a notice. The confirm mail
  carries a link with 32 random bytes; following it shows a button (mail scanners fetch GET
  links), and pressing it confirms. The same token unsubscribes, from a link in every mail.
- Asking reveals nothing: the answer is the same whether the address is new, pending,
  confirmed or unsubscribed, and a pending address is sent one confirm mail per hour at most.
  When `pending_max` requests wait, every asker is refused alike, known address or not.
- A request not confirmed within `PENDING_FOR` lapses: its link confirms nothing, it no longer
  counts against `pending_max` (strangers' requests would otherwise close subscribing for
  good), and the engine deletes it (it was never a subscriber; nothing was sent to it).
- A webhook is added by an admin, never anonymously: an anonymous URL would make this server
  POST wherever a stranger likes (its own network included).
- Every message is an outbox row (kind `status_confirm` or `status_notice`), queued in the
  transaction that asked for it; none belongs to an incident, so none lands in a timeline.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import threading
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, delete, func, select, update

from nachtwacht.config.schema import Settings
from nachtwacht.notify.outbox import OutboundMessage, enqueue
from nachtwacht.statuspage.service import StatusPageError, public_url, title
from nachtwacht.store import claims
from nachtwacht.store import tables as t
from nachtwacht.store.db import inserted_id

s = t.status_subscribers.c
EMAIL = re.compile(r"[^@\s<>\"',;]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}")
RESEND_AFTER = 3600.0
PENDING_FOR = 2 * 86400.0
TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


def channel(settings: Settings, kind: str) -> str | None:
    """The outbox channel for subscribers of this kind (email | webhook), if any."""
    page = settings.status_page
    chosen = page.email_channel if kind == "email" else page.webhook_channel
    if chosen is not None:
        return chosen
    return next((k for k, c in settings.notify.channels.items() if c.kind == kind), None)


def valid_token(token: str) -> bool:
    return bool(TOKEN.fullmatch(token))


def _token() -> str:
    return secrets.token_urlsafe(32)  # 43 characters


def links(settings: Settings, token: str) -> dict[str, str]:
    base = public_url(settings)
    return {"confirm": f"{base}/confirm/{token}", "unsubscribe": f"{base}/unsubscribe/{token}"}


def subscribe_email(conn: Connection, settings: Settings, address: str, now: float) -> str:
    """Ask to subscribe; return what happened (for logs and tests, never for the asker)."""
    address = address.strip()
    if len(address) > 254 or not EMAIL.fullmatch(address):
        raise StatusPageError("that is not an e-mail address", "email")
    name = channel(settings, "email")
    if name is None:
        raise StatusPageError(
            "e-mail subscriptions are not available here", "email", kind="conflict"
        )
    key = address.lower()
    # refused before the address is looked at: a full queue must not tell known from unknown
    waiting = conn.execute(
        select(func.count())
        .select_from(t.status_subscribers)
        .where(s.state == "pending", s.confirm_sent_at > now - PENDING_FOR)
    ).scalar_one()
    if waiting >= settings.status_page.pending_max:
        raise StatusPageError(
            "too many subscriptions wait for confirmation; try again later",
            "email",
            kind="conflict",
        )
    row = (
        conn.execute(select(t.status_subscribers).where(s.kind == "email", s.address == key))
        .mappings()
        .first()
    )
    if row is not None and row["state"] == "confirmed":
        return "already confirmed"
    lapsed = row is not None and row["state"] == "pending" and _lapsed(row, now)
    if (
        row is not None
        and row["state"] == "pending"
        and not lapsed
        and (row["confirm_sent_at"] or 0) > now - RESEND_AFTER
    ):
        return "confirm mail sent recently"
    token = _token()
    if row is None:
        sub_id = inserted_id(
            conn.execute(
                t.status_subscribers.insert().values(
                    kind="email",
                    address=key,
                    token=token,
                    state="pending",
                    created_at=now,
                    confirm_sent_at=now,
                )
            )
        )
    else:
        sub_id = row["id"]
        if row["state"] == "pending" and not lapsed:
            token = row["token"]  # the link of the first mail keeps working
        won = claims.claim(
            conn,
            t.status_subscribers,
            sub_id,
            s.state == row["state"],
            values={"state": "pending", "token": token, "confirm_sent_at": now},
        )
        if not won:
            return "changed meanwhile"
    url = links(settings, token)
    page = title(settings)
    enqueue(
        conn,
        [
            OutboundMessage(
                idempotency_key=f"status:confirm:{sub_id}:{int(now)}",
                kind="status_confirm",
                channel=name,
                subject=f"Confirm your subscription to {page}",
                body=(
                    f"Someone (hopefully you) asked to receive the notices of {page} at this "
                    "address.\n\n"
                    f"To confirm, open this link and press Confirm:\n{url['confirm']}\n\n"
                    "If it was not you, ignore this mail: nothing is sent unless you confirm."
                ),
                address=key,
                payload={"kind": "status_confirm"},
            )
        ],
        now,
    )
    return "confirm mail queued"


def _lapsed(row: Any, now: float) -> bool:
    return (row["confirm_sent_at"] or 0) <= now - PENDING_FOR


def purge_lapsed(conn: Connection, now: float) -> int:
    """Delete requests never confirmed within PENDING_FOR: nobody ever subscribed there."""
    done = conn.execute(
        delete(t.status_subscribers).where(
            s.state == "pending", s.confirm_sent_at <= now - PENDING_FOR
        )
    )
    return int(done.rowcount or 0)


def by_token(conn: Connection, token: str) -> dict[str, Any] | None:
    if not valid_token(token):
        return None
    row = conn.execute(select(t.status_subscribers).where(s.token == token)).mappings().first()
    return dict(row) if row else None


def confirm(conn: Connection, token: str, now: float) -> bool:
    """Confirm the subscription of this token; False when there is none pending."""
    row = by_token(conn, token)
    if row is None:
        return False
    if row["state"] == "confirmed":
        return True
    if row["state"] == "pending" and _lapsed(row, now):
        return False  # its place in the queue was given up; asking again sends a new link
    return claims.claim(
        conn,
        t.status_subscribers,
        row["id"],
        (s.state == "pending") & (s.confirm_sent_at > now - PENDING_FOR),
        values={"state": "confirmed", "confirmed_at": now},
    )


def unsubscribe(conn: Connection, token: str, now: float) -> bool:
    row = by_token(conn, token)
    if row is None:
        return False
    if row["state"] != "unsubscribed" and claims.claim(
        conn,
        t.status_subscribers,
        row["id"],
        s.state == row["state"],
        values={"state": "unsubscribed", "unsubscribed_at": now},
    ):
        _withdraw_queued(conn, row["id"])
    return True


def _withdraw_queued(conn: Connection, subscriber_id: int) -> int:
    """Cancel the subscriber's notices still waiting in the outbox: "no more notices" means
    none, not none after those queued (a large fan-out may wait a while behind the pages)."""
    o = t.outbox.c
    done = conn.execute(
        update(t.outbox)
        .where(
            o.status == "pending",
            o.kind == "status_notice",
            o.idempotency_key.like(f"status:n%:s{subscriber_id}"),
        )
        .values(status="cancelled", claimed_until=None, last_error="unsubscribed")
    )
    return int(done.rowcount or 0)


def add_webhook(conn: Connection, settings: Settings, url: str, now: float) -> dict[str, Any]:
    """An admin adds a subscriber's webhook: confirmed at once; its token removes it."""
    url = url.strip()
    parts = urlsplit(url)
    if len(url) > 300 or parts.scheme not in ("http", "https") or not parts.hostname:
        raise StatusPageError("the webhook must be an http(s) URL of at most 300 characters", "url")
    if channel(settings, "webhook") is None:
        raise StatusPageError(
            "no webhook channel is configured (notify.channels, kind: webhook) to send with",
            "url",
            kind="conflict",
        )
    found = conn.execute(select(s.id).where(s.kind == "webhook", s.address == url)).scalar()
    values = {"token": _token(), "state": "confirmed", "confirmed_at": now}
    if found is not None:
        claims.claim(conn, t.status_subscribers, found, values=values)
        sub_id = int(found)
    else:
        sub_id = inserted_id(
            conn.execute(
                t.status_subscribers.insert().values(
                    kind="webhook", address=url, created_at=now, **values
                )
            )
        )
    row = conn.execute(select(t.status_subscribers).where(s.id == sub_id)).mappings().one()
    return dict(row)


def remove(conn: Connection, subscriber_id: int, now: float) -> None:
    if not claims.claim(
        conn,
        t.status_subscribers,
        subscriber_id,
        s.state != "unsubscribed",
        values={"state": "unsubscribed", "unsubscribed_at": now},
    ):
        raise StatusPageError(
            f"there is no active subscriber {subscriber_id}", "subscriber", kind="not_found"
        )
    _withdraw_queued(conn, subscriber_id)


def counts(conn: Connection) -> dict[str, dict[str, int]]:
    """Subscribers by kind and state: for the admins, never for the public page."""
    out: dict[str, dict[str, int]] = {"email": {}, "webhook": {}}
    rows = conn.execute(select(s.kind, s.state, func.count()).group_by(s.kind, s.state)).all()
    for kind, state, number in rows:
        out.setdefault(kind, {})[state] = int(number)
    return out


def list_webhooks(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(s.id, s.address, s.state, s.confirmed_at)
        .where(s.kind == "webhook", s.state == "confirmed")
        .order_by(s.id)
    ).mappings()
    return [dict(r) for r in rows]


def fanout(conn: Connection, settings: Settings, notice: dict[str, Any], now: float) -> int:
    """One outbox row per confirmed subscriber for a notice just published."""
    names = {kind: channel(settings, kind) for kind in ("email", "webhook")}
    page = title(settings)
    base = public_url(settings)
    when = datetime.fromtimestamp(notice["published_at"], settings.zone)
    status = notice["public_status"].capitalize()
    affected = ", ".join(notice["components"]) or "all services"
    text = (
        f"{notice['title']}\nStatus: {status}\nAffected: {affected}\n\n{notice['body']}\n\n"
        f"Published {when:%Y-%m-%d %H:%M %Z} on {base}"
    )
    queued = 0
    after = 0
    while True:
        rows = conn.execute(
            select(s.id, s.kind, s.address, s.token)
            .where(s.state == "confirmed", s.id > after)
            .order_by(s.id)
            .limit(500)
        ).all()
        batch = []
        for row in rows:
            after = row.id
            name = names.get(row.kind)
            if name is None:
                continue
            off = links(settings, row.token)["unsubscribe"]
            batch.append(
                OutboundMessage(
                    idempotency_key=f"status:n{notice['id']}:s{row.id}",
                    kind="status_notice",
                    channel=name,
                    subject=f"[{page}] {notice['title']}",
                    body=f"{text}\n\n--\nUnsubscribe: {off}",
                    address=row.address,
                    payload={
                        "status_page": page,
                        "url": base,
                        "notice": notice,
                        "unsubscribe": off,
                    },
                )
            )
        queued += len(enqueue(conn, batch, now))
        if len(rows) < 500:
            return queued


def client_key(address: str) -> str:
    """What the limiter counts: an IPv4 address, or an IPv6 address's /64, which one
    customer line gets whole (counting each address would give one client 2**64 of them)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    mapped = getattr(ip, "ipv4_mapped", None)
    if ip.version == 6 and mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(mapped or ip)


class SubscribeLimiter:
    """At most `per_hour` subscription requests per client address (IPv6: per /64), counted
    in memory.

    In memory on purpose: refusing must cost less than the request, and a restart that
    forgets the counts lets a few more requests through, whose mails the resend bound and
    `pending_max` still cap. The table of addresses is bounded; the oldest go first.
    """

    def __init__(self, per_hour: int, max_clients: int = 10_000) -> None:
        self.per_hour = per_hour
        self.max_clients = max_clients
        self._seen: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, client: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        client = client_key(client)
        with self._lock:
            times = [x for x in self._seen.pop(client, []) if x > now - 3600.0]
            ok = len(times) < self.per_hour
            if ok:
                times.append(now)
            self._seen[client] = times
            while len(self._seen) > self.max_clients:
                self._seen.popitem(last=False)
            return ok
