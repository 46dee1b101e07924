"""Compose outbox messages for an incident (interim version; the full one replaces it)."""

from __future__ import annotations

from typing import Any

from nachtwacht.config.schema import Settings
from nachtwacht.notify.outbox import OutboundMessage
from nachtwacht.oncall.models import Contact


def compose(
    settings: Settings,
    *,
    kind: str,
    key: str,
    incident: dict[str, Any],
    contacts: list[Contact],
    context: dict[str, Any] | None = None,
    channels: list[str] | None = None,
) -> list[OutboundMessage]:
    subject = f"[S{incident['severity']}] {kind}: {incident['title']}"
    body = subject
    out: list[OutboundMessage] = []
    for name, cfg in settings.notify.channels.items():
        if channels is not None and name not in channels:
            continue
        if cfg.kind in ("email", "sms"):
            for c in contacts:
                address = c.email if cfg.kind == "email" else c.phone
                if address:
                    out.append(
                        OutboundMessage(
                            f"{key}:{name}:{c.id}",
                            kind,
                            name,
                            subject,
                            body,
                            incident["id"],
                            c.id,
                            address,
                        )
                    )
        else:
            out.append(
                OutboundMessage(f"{key}:{name}:*", kind, name, subject, body, incident["id"])
            )
    return out
