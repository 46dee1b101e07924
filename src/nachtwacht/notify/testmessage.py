"""Sending a test message: does alerting reach this person now? For the CLI, the API, the checklist.

A `test` message is queued to one contact on every channel that reaches them (or on the
channels given, when one of them does) and sent by a sender of its own. A row still pending
after the wait is given up (made `dead`): a test answers now or not at all, it must not
arrive an hour later.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from typing import Any

from nachtwacht.clock import Clock
from nachtwacht.config.schema import Settings
from nachtwacht.notify.compose import BROADCAST, compose
from nachtwacht.notify.outbox import enqueue, give_up
from nachtwacht.notify.queries import rows_by_id
from nachtwacht.notify.sender import OutboxSender
from nachtwacht.problems import Kind, Problem
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store

o = t.outbox.c


class NotifyTestError(Problem):
    """No such contact (not_found), or no channel reaches them (invalid)."""

    def __init__(self, message: str, field: str = "contact", kind: Kind = "invalid") -> None:
        super().__init__(message, field, kind)


def queue_test(
    settings: Settings,
    store: Store,
    contact_id: str,
    now: float,
    *,
    prefix: str = "test",
    routes: list[str] | None = None,
) -> list[int]:
    """Queue the test message to `contact_id`; return the outbox row ids.

    With `routes`, only on those channels, unless none of them reaches the contact: then on
    every channel that does (alerting must still be tested).
    """
    contact = settings.people.contact(contact_id)
    if contact is None:
        known = ", ".join(c.id for c in settings.people.contacts) or "none configured"
        raise NotifyTestError(f"no contact '{contact_id}' (contacts: {known})", kind="not_found")
    key = f"{prefix}:{contact.id}:{int(now)}:{secrets.token_hex(4)}"
    messages = []
    if routes is not None:
        messages = compose(
            settings,
            kind="test",
            key=key,
            incident=None,
            contacts=[contact],
            channels=routes,
            now=now,
        )
    if not messages:
        messages = compose(
            settings, kind="test", key=key, incident=None, contacts=[contact], now=now
        )
    if not messages:
        raise NotifyTestError(
            f"no channel reaches '{contact.id}': give them an email or phone, "
            "or configure a webhook or chat channel"
        )
    with store.begin() as conn:
        return enqueue(conn, messages, now)


async def send_test(
    settings: Settings,
    store: Store,
    clock: Clock,
    contact_id: str,
    wait: float = 30.0,
    sender: OutboxSender | None = None,
    *,
    prefix: str = "test",
    routes: list[str] | None = None,
    first_attempt: bool = False,
) -> list[dict[str, Any]]:
    """Queue a `test` message to one contact on every channel that reaches them and send it.

    Returns one row per channel: channel, kind, address, status (sent | dead | pending),
    attempts, error. With `first_attempt` each message gets one attempt within `wait` (the
    checklist asks whether alerts go out now, not whether a retry gets through); otherwise
    failures are retried until `wait` ends. What is still pending then is given up.
    """
    now = clock.now()
    ids = await asyncio.to_thread(
        queue_test, settings, store, contact_id, now, prefix=prefix, routes=routes
    )
    own = sender is None
    runner = sender or OutboxSender(
        store,
        settings,
        clock,
        f"{socket.gethostname()}:{os.getpid()}:{prefix}",
        concurrency=max(1, len(ids)),
        on_outcome=None,  # test messages belong to no incident
    )
    try:
        rows = await runner.deliver(ids, wait, first_attempt=first_attempt)
    finally:
        if own:
            await runner.close()
    if any(r["status"] == "pending" for r in rows):
        rows = await asyncio.to_thread(_give_up, store, ids)
    kinds = {name: cfg.kind for name, cfg in settings.notify.channels.items()}
    return [
        {
            "channel": r["channel"],
            "kind": kinds.get(r["channel"], "?"),
            "address": r["address"]
            or ("(channel)" if kinds.get(r["channel"]) in BROADCAST else None),
            "status": r["status"],
            "attempts": r["attempts"],
            "error": r["last_error"],
        }
        for r in rows
    ]


def _give_up(store: Store, ids: list[int]) -> list[dict[str, Any]]:
    with store.begin() as conn:
        give_up(conn, ids, "not sent within the wait (a retry or the rate limit was due later)")
    return rows_by_id(store, ids)
