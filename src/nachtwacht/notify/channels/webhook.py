"""A generic JSON webhook: the whole message, with the structured payload, in one POST.

A row whose `address` is an http(s) URL goes there instead of the channel's URL: a status-page
subscriber's own webhook (statuspage/); an e-mail address or phone number never is one. The
channel's headers (its receiver's credentials) are then not sent, so no subscriber sees them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nachtwacht.notify.channels import base_headers, request
from nachtwacht.notify.models import WebhookChannel

if TYPE_CHECKING:
    from nachtwacht.httpclient import HttpClient


def body(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "key": message["key"],
        "kind": message["kind"],
        "subject": message["subject"],
        "body": message["body"],
        "payload": message.get("payload") or {},
    }


async def send(cfg: WebhookChannel, message: dict[str, Any], http: HttpClient) -> None:
    address = message.get("address") or ""
    own = address if address.startswith(("http://", "https://")) else None
    # the configured headers (auth tokens) first; ours last, so the key cannot be overridden
    headers = {**({} if own else cfg.headers), **base_headers(message)}
    await request(
        http,
        "POST",
        str(own or cfg.url),
        timeout=float(cfg.timeout),
        what=f"webhook {message['channel']}",
        json=body(message),
        headers=headers,
    )
