"""SMS through an HTTP gateway: the channel's `body` template is rendered with `to` and `text`.

POST sends the rendered body with the channel's `content_type`. GET sends it as the query
string: a JSON object body becomes query parameters, anything else (such as
`to={{ to | urlencode }}&text={{ text | urlencode }}`) is appended as it is.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, Template

from nachtwacht.notify.channels import DeliveryError, base_headers, request
from nachtwacht.notify.models import SmsChannel

if TYPE_CHECKING:
    from nachtwacht.httpclient import HttpClient


@lru_cache(maxsize=32)
def _template(source: str) -> Template:
    return Environment(autoescape=False).from_string(source)


def render_body(cfg: SmsChannel, to: str, text: str) -> str:
    try:
        return _template(cfg.body).render(to=to, text=text)
    except Exception as exc:  # a broken body template will not fix itself: do not retry
        raise DeliveryError(f"sms body template: {exc}", permanent=True) from exc


async def send(cfg: SmsChannel, message: dict[str, Any], http: HttpClient) -> None:
    to = message.get("address")
    if not to:
        raise DeliveryError("sms: the message has no phone number", permanent=True)
    rendered = render_body(cfg, to, message["body"])
    headers = {"Content-Type": cfg.content_type, **cfg.headers, **base_headers(message)}
    what = f"sms {message['channel']} to {to}"
    url = str(cfg.url)
    if cfg.method == "GET":
        headers.pop("Content-Type", None)
        try:
            params = json.loads(rendered)
        except ValueError:
            params = None
        if isinstance(params, dict):
            query = {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}
            await request(
                http,
                "GET",
                url,
                timeout=float(cfg.timeout),
                what=what,
                params=query,
                headers=headers,
            )
            return
        joined = f"{url}{'&' if '?' in url else '?'}{rendered.strip()}"
        await request(http, "GET", joined, timeout=float(cfg.timeout), what=what, headers=headers)
        return
    await request(
        http,
        "POST",
        url,
        timeout=float(cfg.timeout),
        what=what,
        content=rendered.encode("utf-8"),
        headers=headers,
    )
