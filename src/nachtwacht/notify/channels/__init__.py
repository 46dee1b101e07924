"""Delivery channels: one module per kind, each with `async def send(cfg, message, http)`.

`message` is an outbox row as a dict: key, kind, channel, contact, address, subject, body,
payload, incident_id, attempt, now. A channel either returns (delivered) or raises
`DeliveryError`: `permanent=True` when retrying cannot help (a 4xx answer, a refused
recipient, a bad certificate), `permanent=False` for everything that may pass (5xx, 408, 429,
timeouts, refused connections).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nachtwacht import __version__

if TYPE_CHECKING:
    from nachtwacht.httpclient import HttpClient, Response

# channel kind → module holding its `send`
MODULES = {
    "email": "email",
    "webhook": "webhook",
    "slack": "chat",
    "mattermost": "chat",
    "teams": "chat",
    "sms": "sms",
}
USER_AGENT = f"nachtwacht/{__version__}"


class DeliveryError(Exception):
    def __init__(
        self, message: str, permanent: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after  # what the receiver asked for (429/503 Retry-After)


async def send(cfg: Any, message: dict[str, Any], http: HttpClient) -> None:
    """Deliver `message` through the channel `cfg` describes (dispatch on `cfg.kind`)."""
    name = MODULES.get(cfg.kind)
    if name is None:
        raise DeliveryError(f"unknown channel kind '{cfg.kind}'", permanent=True)
    module = importlib.import_module(f"{__name__}.{name}")
    await module.send(cfg, message, http)


def base_headers(message: dict[str, Any]) -> dict[str, str]:
    """Headers every HTTP channel sends: the receiver dedupes a retry by Idempotency-Key."""
    return {"Idempotency-Key": str(message["key"]), "User-Agent": USER_AGENT}


async def request(
    http: HttpClient,
    method: str,
    url: str,
    *,
    timeout: float,
    what: str,
    **kwargs: Any,
) -> Response:
    """One HTTP request, with every failure turned into a DeliveryError that says why."""
    from nachtwacht.httpclient import BadUrl, HttpTimeout, TransportError

    try:
        response = await http.request(method, url, timeout=timeout, **kwargs)
    except HttpTimeout:
        raise DeliveryError(f"{what}: no answer within {timeout:g}s") from None
    except BadUrl as exc:
        raise DeliveryError(f"{what}: {exc}", permanent=True) from None
    except TransportError as exc:
        raise DeliveryError(f"{what}: {exc}") from None
    check(response, what)
    return response


def check(response: Response, what: str) -> None:
    """2xx is delivered; 408, 429 and 5xx may pass; any other answer will not."""
    code = response.status_code
    if 200 <= code < 300:
        return
    snippet = " ".join(response.text.split())[:200] if response.content else ""
    text = f"{what}: HTTP {code}" + (f" {snippet}" if snippet else "")
    if code in (408, 429) or code >= 500:
        raise DeliveryError(text, retry_after=_retry_after(response))
    if 300 <= code < 400:
        where = response.headers.get("location", "?")
        raise DeliveryError(f"{text} (redirects to {where}; configure that URL)", permanent=True)
    raise DeliveryError(text, permanent=True)


def _retry_after(response: Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # the HTTP-date form is rare from webhooks; the backoff applies instead
