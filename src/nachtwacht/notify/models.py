"""Config models for notification channels and outbox behaviour."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from nachtwacht.config.redact import CapabilityUrl, SecretHeaders, SecretStr
from nachtwacht.durations import Duration

PAGE_LIMIT_FLOOR = 10  # pages per minute per destination when not configured


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmailChannel(Strict):
    """SMTP; delivers to each contact's `email`."""

    kind: Literal["email"]
    host: str = "127.0.0.1"
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    ssl: bool = False  # implicit TLS (port 465)
    username: str | None = None
    password: SecretStr | None = None
    sender: str = "nachtwacht@localhost"
    timeout: Duration = 15.0


class WebhookChannel(Strict):
    """A generic JSON POST with the whole message; one per channel, not per contact."""

    kind: Literal["webhook"]
    url: CapabilityUrl  # receivers rarely check more than that the URL is known
    headers: SecretHeaders = Field(default_factory=dict)
    timeout: Duration = 10.0
    # hears every incident's follow-ups (updates, notices, resolved), not only those of the
    # incidents whose pages it carried
    team_wide: bool = False


class ChatChannel(Strict):
    """Slack- or Mattermost-compatible (`{"text": ...}`) or Microsoft Teams incoming webhook."""

    kind: Literal["slack", "mattermost", "teams"]
    url: CapabilityUrl  # whoever has an incoming webhook's URL can post to the channel
    timeout: Duration = 10.0
    team_wide: bool = False  # as for webhooks


class SmsChannel(Strict):
    """An HTTP SMS gateway; delivers to each contact's `phone`.

    `body` is a Jinja2 template rendered with `to` and `text`, sent as JSON unless
    `content_type` says otherwise.
    """

    kind: Literal["sms"]
    url: HttpUrl
    method: Literal["POST", "GET"] = "POST"
    headers: SecretHeaders = Field(default_factory=dict)
    # the gateway's account key often sits in the body template
    body: SecretStr = '{"to": {{ to | tojson }}, "text": {{ text | tojson }}}'
    content_type: str = "application/json"
    max_length: int = Field(default=480, ge=70)
    timeout: Duration = 10.0


Channel = Annotated[
    EmailChannel | WebhookChannel | ChatChannel | SmsChannel, Field(discriminator="kind")
]


class NotifySettings(Strict):
    channels: dict[str, Channel] = Field(default_factory=dict)
    # per destination (an address, or a broadcast channel): at most this many messages other
    # than pages start in any minute; the rest wait. Pages never count against it.
    rate_limit_per_minute: int = Field(default=4, ge=1)
    # the same for pages (first pages, repeats, escalation steps), counted on their own: it
    # only protects a destination from a flood of pages, and S1 pages go first within it.
    # Unset: rate_limit_per_minute, but at least 10 (never stricter on pages than before)
    page_rate_limit_per_minute: int | None = Field(default=None, ge=1)

    @property
    def page_limit(self) -> int:
        if self.page_rate_limit_per_minute is not None:
            return self.page_rate_limit_per_minute
        return max(PAGE_LIMIT_FLOOR, self.rate_limit_per_minute)

    max_attempts: int = Field(default=10, ge=1)
    retry_backoff: Duration = 5.0  # first retry after this; doubles each attempt, up to 10 min
    templates_dir: str | None = None  # overrides of the built-in Jinja2 templates
