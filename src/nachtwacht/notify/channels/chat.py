"""Chat incoming webhooks: Slack and Mattermost (`{"text": ...}`) and Microsoft Teams.

Teams gets a message with one Adaptive Card attachment, the form both the classic Incoming
Webhook connector and the Workflows ("When a Teams webhook request is received") webhooks
accept; an acknowledge button opens the ack link when the message has one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nachtwacht.notify.channels import base_headers, request
from nachtwacht.notify.models import ChatChannel

if TYPE_CHECKING:
    from nachtwacht.httpclient import HttpClient


def slack_body(message: dict[str, Any], bold: str = "*") -> dict[str, Any]:
    return {"text": f"{bold}{message['subject']}{bold}\n{message['body']}"}


def teams_body(message: dict[str, Any]) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": message["subject"],
            "weight": "Bolder",
            "size": "Medium",
            "wrap": True,
        }
    ]
    # one TextBlock per line: Teams joins single newlines inside a TextBlock
    gap = False
    for line in message["body"].splitlines():
        if not line.strip():
            gap = True
            continue
        blocks.append(
            {
                "type": "TextBlock",
                "text": line,
                "wrap": True,
                "spacing": "Medium" if gap else "None",
            }
        )
        gap = False
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": blocks,
        "msteams": {"width": "Full"},
    }
    ack = (message.get("payload") or {}).get("ack_url")
    if ack and ack in message["body"]:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Acknowledge", "url": ack}]
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


async def send(cfg: ChatChannel, message: dict[str, Any], http: HttpClient) -> None:
    if cfg.kind == "teams":
        payload = teams_body(message)
    else:
        # Slack's mrkdwn bolds *x*; Mattermost's Markdown bolds **x**
        payload = slack_body(message, "**" if cfg.kind == "mattermost" else "*")
    await request(
        http,
        "POST",
        str(cfg.url),
        timeout=float(cfg.timeout),
        what=f"{cfg.kind} {message['channel']}",
        json=payload,
        headers=base_headers(message),
    )
