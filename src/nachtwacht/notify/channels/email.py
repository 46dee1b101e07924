"""Email over SMTP: implicit TLS (`ssl`), STARTTLS, AUTH; one message per recipient.

smtplib blocks, so a send runs in a worker thread. The Message-ID is derived from the
outbox idempotency key, so a retry after a crash carries the same Message-ID (mail clients and
list servers drop the second copy) and `X-Nachtwacht-Key` names the key itself.

Certificates are checked against the system's CA store; for a private CA point the
`SSL_CERT_FILE` environment variable at its bundle.
"""

from __future__ import annotations

import asyncio
import email.policy
import hashlib
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from typing import TYPE_CHECKING, Any

from nachtwacht.notify.channels import DeliveryError
from nachtwacht.notify.models import EmailChannel

if TYPE_CHECKING:
    from nachtwacht.httpclient import HttpClient


def message_id(key: str, sender: str) -> str:
    domain = sender.rpartition("@")[2].strip("<> ") or "nachtwacht.invalid"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    return f"<{digest}.nachtwacht@{domain}>"


# RFC 5322's hard limit: a List-Unsubscribe URL is one token that cannot be folded, and at
# the default 78 Python would write it as RFC 2047 encoded-words, which mail clients do not
# read as a link (RFC 2369 allows none there)
LONG_LINES = email.policy.default.clone(max_line_length=998)


def build(cfg: EmailChannel, message: dict[str, Any]) -> EmailMessage:
    unsubscribe = (message.get("payload") or {}).get("unsubscribe")
    msg = EmailMessage(policy=LONG_LINES) if unsubscribe else EmailMessage()
    msg["From"] = cfg.sender
    msg["To"] = formataddr((message.get("contact_name") or "", message["address"]))
    msg["Subject"] = message["subject"]
    msg["Date"] = formatdate(message.get("now"), localtime=False, usegmt=True)
    msg["Message-ID"] = message_id(str(message["key"]), cfg.sender)
    msg["X-Nachtwacht-Key"] = str(message["key"])
    # an autoresponder must not answer a page (RFC 3834)
    msg["Auto-Submitted"] = "auto-generated"
    if unsubscribe:
        # a status-page subscriber's mail: mail clients offer the one-click unsubscribe (RFC
        # 8058), which POSTs to the link; the page's own link does the same after a button
        msg["List-Unsubscribe"] = f"<{unsubscribe}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(message["body"])
    return msg


async def send(cfg: EmailChannel, message: dict[str, Any], http: HttpClient) -> None:
    if not message.get("address"):
        raise DeliveryError("email: the message has no address", permanent=True)
    await asyncio.to_thread(deliver, cfg, build(cfg, message))


def deliver(cfg: EmailChannel, msg: EmailMessage) -> None:
    where = f"smtp {cfg.host}:{cfg.port}"
    timeout = float(cfg.timeout)
    try:
        context = ssl.create_default_context()
        if cfg.ssl:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                cfg.host, cfg.port, timeout=timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=timeout)
        with smtp:
            smtp.ehlo()
            if cfg.starttls and not cfg.ssl:
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(
                        f"{where}: the server does not offer STARTTLS "
                        "(set starttls: false to send without it)",
                        permanent=True,
                    )
                smtp.starttls(context=context)
                smtp.ehlo()
            if cfg.username:
                smtp.login(cfg.username, cfg.password or "")
            smtp.send_message(msg)
    except DeliveryError:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryError(f"{where}: certificate: {exc.verify_message}", permanent=True) from None
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        detail = "; ".join(f"{r}: {c} {_text(m)}" for r, (c, m) in exc.recipients.items())
        raise DeliveryError(
            f"{where}: recipient refused: {detail}", permanent=all(c >= 500 for c in codes)
        ) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryError(f"{where}: {exc}", permanent=True) from None
    except smtplib.SMTPResponseException as exc:  # auth, sender, data: 5xx final, 4xx may pass
        raise DeliveryError(
            f"{where}: {exc.smtp_code} {_text(exc.smtp_error)}", permanent=exc.smtp_code >= 500
        ) from None
    except (smtplib.SMTPException, OSError) as exc:  # refused, reset, timeout, TLS handshake
        reason = str(exc) or exc.__class__.__name__
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {timeout:g}s"
        raise DeliveryError(f"{where}: {reason}") from None


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
