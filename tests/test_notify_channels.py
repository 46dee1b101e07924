"""Each channel against a real receiver: aiosmtpd for email, aiohttp for the HTTP kinds."""

from __future__ import annotations

import email
import email.policy
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from nachtwacht.httpclient import HttpClient
from nachtwacht.notify import channels
from nachtwacht.notify.channels import DeliveryError
from nachtwacht.notify.channels.email import message_id
from nachtwacht.notify.models import Channel
from tests.conftest import closed_port
from tests.notify_helpers import Authenticator, Receiver, smtp_server

ACK = "https://nw.example.org/ack/tok-1"


def channel(**cfg: Any) -> Any:
    return TypeAdapter(Channel).validate_python(cfg)


def message(**over: Any) -> dict[str, Any]:
    msg = {
        "id": 1,
        "key": "inc7:page0:mail:alice",
        "kind": "emergency_alert",
        "channel": "mail",
        "contact": "alice",
        "contact_name": "Alice Jansen",
        "address": "alice@example.org",
        "subject": "EMERGENCY ALERT - S1 Critical - shop: Database unreachable",
        "body": f"EMERGENCY ALERT - S1 (Critical)\nSystem: shop\n\nAcknowledge: {ACK}",
        "payload": {"incident_id": 7, "ack_url": ACK, "kind": "emergency_alert"},
        "incident_id": 7,
        "attempt": 1,
        "now": 1_800_000_000.0,
    }
    msg.update(over)
    return msg


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    async with HttpClient() as client:
        yield client


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    yield cert, key


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def parsed(envelope: Any) -> email.message.EmailMessage:
    return email.message_from_bytes(envelope.original_content, policy=email.policy.default)


# -- email ------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_email_with_auth_arrives_with_subject_body_and_stable_message_id(
    http: HttpClient,
) -> None:
    auth = Authenticator("nw", "s3cret")
    controller, box = smtp_server(authenticator=auth, auth_required=True, auth_require_tls=False)
    try:
        cfg = channel(
            kind="email", host="127.0.0.1", port=controller.port, starttls=False,
            username="nw", password="s3cret", sender="nachtwacht@ops.example.org",
        )  # fmt: skip
        await channels.send(cfg, message(), http)
    finally:
        controller.stop()
    assert auth.logins == [b"nw"]
    [env] = box.messages
    assert env.rcpt_tos == ["alice@example.org"]
    mail = parsed(env)
    assert mail["Subject"] == "EMERGENCY ALERT - S1 Critical - shop: Database unreachable"
    assert mail["To"] == "Alice Jansen <alice@example.org>"
    assert mail["X-Nachtwacht-Key"] == "inc7:page0:mail:alice"
    assert mail["Message-ID"] == message_id("inc7:page0:mail:alice", "nachtwacht@ops.example.org")
    assert mail["Message-ID"].endswith("@ops.example.org>")
    assert f"Acknowledge: {ACK}" in mail.get_content()


def test_a_long_unsubscribe_link_is_a_plain_header_not_encoded_words() -> None:
    """Mail clients read List-Unsubscribe's <URL> as is (RFC 2369): no RFC 2047 encoding."""
    from nachtwacht.notify.channels.email import build

    off = "https://status.vereniging.example/status-page/unsubscribe/" + "7lEn9XLDiBHsw" * 4
    cfg = channel(kind="email", host="127.0.0.1", port=25, sender="status@vereniging.example")
    raw = build(cfg, message(payload={"unsubscribe": off})).as_bytes()
    assert f"\nList-Unsubscribe: <{off}>\n".encode() in raw
    assert b"=?utf-8?" not in raw.split(b"\n\n", 1)[0]  # no header is encoded


def test_message_id_is_the_same_for_a_retry_and_differs_per_key() -> None:
    a = message_id("inc7:page0:mail:alice", "nw@example.org")
    assert a == message_id("inc7:page0:mail:alice", "nw@example.org")
    assert a != message_id("inc7:page0:mail:bob", "nw@example.org")


async def test_email_over_starttls_with_auth_checks_the_certificate(
    http: HttpClient, tls_cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tls_cert
    auth = Authenticator("nw", "s3cret")
    controller, box = smtp_server(
        tls_context=server_tls(cert, key),
        require_starttls=True,
        authenticator=auth,
        auth_required=True,  # and, by default, AUTH only after STARTTLS
    )
    cfg = channel(
        kind="email", host="127.0.0.1", port=controller.port, starttls=True,
        username="nw", password="s3cret",
    )  # fmt: skip
    try:
        # not trusted yet: a certificate problem will not pass by retrying
        with pytest.raises(DeliveryError) as untrusted:
            await channels.send(cfg, message(), http)
        assert untrusted.value.permanent and "certificate" in str(untrusted.value)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # how a private CA is trusted
        await channels.send(cfg, message(), http)
    finally:
        controller.stop()
    assert auth.logins == [b"nw"]
    assert parsed(box.messages[0])["X-Nachtwacht-Key"] == "inc7:page0:mail:alice"


async def test_email_over_implicit_tls(
    http: HttpClient, tls_cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tls_cert
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    controller, box = smtp_server(ssl_context=server_tls(cert, key))
    try:
        cfg = channel(
            kind="email", host="127.0.0.1", port=controller.port, ssl=True, starttls=False
        )
        await channels.send(cfg, message(), http)
    finally:
        controller.stop()
    assert len(box.messages) == 1


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_email_wrong_password_is_permanent(http: HttpClient) -> None:
    controller, box = smtp_server(
        authenticator=Authenticator("nw", "right"), auth_required=True, auth_require_tls=False
    )
    try:
        cfg = channel(
            kind="email", host="127.0.0.1", port=controller.port, starttls=False,
            username="nw", password="wrong",
        )  # fmt: skip
        with pytest.raises(DeliveryError) as exc:
            await channels.send(cfg, message(), http)
    finally:
        controller.stop()
    assert exc.value.permanent and "535" in str(exc.value)
    assert box.messages == []


async def test_email_requiring_starttls_from_a_server_without_it_says_so(
    http: HttpClient,
) -> None:
    controller, _box = smtp_server()
    try:
        cfg = channel(kind="email", host="127.0.0.1", port=controller.port, starttls=True)
        with pytest.raises(DeliveryError, match="does not offer STARTTLS") as exc:
            await channels.send(cfg, message(), http)
    finally:
        controller.stop()
    assert exc.value.permanent


async def test_email_to_a_closed_port_is_retried(http: HttpClient) -> None:
    port = closed_port()
    cfg = channel(kind="email", host="127.0.0.1", port=port, starttls=False, timeout=2)
    with pytest.raises(DeliveryError, match=f"smtp 127.0.0.1:{port}") as exc:
        await channels.send(cfg, message(), http)
    assert not exc.value.permanent


# -- webhook and chat -------------------------------------------------------------------------


async def test_webhook_posts_the_whole_message_with_idempotency_key(
    http: HttpClient, receiver: Receiver
) -> None:
    cfg = channel(
        kind="webhook", url=f"{receiver.url}/hooks/nw", headers={"Authorization": "Bearer x"}
    )
    await channels.send(cfg, message(channel="hook", contact=None, address=None), http)
    [seen] = receiver.seen
    assert seen.path == "/hooks/nw" and seen.method == "POST"
    assert seen.headers["Idempotency-Key"] == "inc7:page0:mail:alice"
    assert seen.headers["Authorization"] == "Bearer x"
    assert seen.json == {
        "key": "inc7:page0:mail:alice",
        "kind": "emergency_alert",
        "subject": "EMERGENCY ALERT - S1 Critical - shop: Database unreachable",
        "body": f"EMERGENCY ALERT - S1 (Critical)\nSystem: shop\n\nAcknowledge: {ACK}",
        "payload": {"incident_id": 7, "ack_url": ACK, "kind": "emergency_alert"},
    }


async def test_configured_headers_cannot_replace_the_idempotency_key(
    http: HttpClient, receiver: Receiver
) -> None:
    cfg = channel(kind="webhook", url=receiver.url, headers={"Idempotency-Key": "fixed"})
    await channels.send(cfg, message(), http)
    assert receiver.seen[0].headers["Idempotency-Key"] == "inc7:page0:mail:alice"


@pytest.mark.parametrize(("kind", "bold"), [("slack", "*"), ("mattermost", "**")])
async def test_slack_and_mattermost_get_text(
    http: HttpClient, receiver: Receiver, kind: str, bold: str
) -> None:
    await channels.send(channel(kind=kind, url=receiver.url), message(channel="ops"), http)
    text = receiver.seen[0].json["text"]
    assert text.startswith(
        f"{bold}EMERGENCY ALERT - S1 Critical - shop: Database unreachable{bold}\n"
    )
    assert ACK in text


async def test_teams_gets_an_adaptive_card_with_an_acknowledge_button(
    http: HttpClient, receiver: Receiver
) -> None:
    await channels.send(channel(kind="teams", url=receiver.url), message(channel="ms"), http)
    body = receiver.seen[0].json
    assert body["type"] == "message"
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    texts = [b["text"] for b in card["body"]]
    assert texts[0] == "EMERGENCY ALERT - S1 Critical - shop: Database unreachable"
    assert "System: shop" in texts
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Acknowledge", "url": ACK}]


# -- sms --------------------------------------------------------------------------------------


async def test_sms_gateway_gets_the_rendered_json_body(
    http: HttpClient, receiver: Receiver
) -> None:
    cfg = channel(
        kind="sms", url=f"{receiver.url}/send", headers={"X-Api-Key": "k"},
        body='{"recipient": {{ to | tojson }}, "message": {{ text | tojson }}, "from": "NW"}',
    )  # fmt: skip
    text = 'S1 "db" down <now> Ack: https://x/ack/1'
    await channels.send(cfg, message(address="+31600000001", body=text), http)
    [seen] = receiver.seen
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["X-Api-Key"] == "k"
    assert seen.json == {"recipient": "+31600000001", "message": text, "from": "NW"}


async def test_sms_gateway_by_get_with_a_query_template(
    http: HttpClient, receiver: Receiver
) -> None:
    cfg = channel(
        kind="sms", url=f"{receiver.url}/sms?user=nw", method="GET",
        body="to={{ to | urlencode }}&text={{ text | urlencode }}",
    )  # fmt: skip
    await channels.send(cfg, message(address="+31 6 0000 0001", body="db down & out"), http)
    [seen] = receiver.seen
    assert seen.method == "GET"
    assert seen.query == {"user": "nw", "to": "+31 6 0000 0001", "text": "db down & out"}


# -- what may be retried ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "permanent"), [(400, True), (401, True), (404, True), (408, False), (500, False),
                              (502, False), (503, False)],
)  # fmt: skip
async def test_4xx_is_permanent_and_5xx_408_are_retried(
    http: HttpClient, status: int, permanent: bool
) -> None:
    r = await Receiver(answers=[status]).start()
    try:
        with pytest.raises(DeliveryError, match=f"HTTP {status}") as exc:
            await channels.send(channel(kind="webhook", url=r.url), message(), http)
    finally:
        await r.stop()
    assert exc.value.permanent is permanent


async def test_429_is_retried_after_what_the_receiver_asks(http: HttpClient) -> None:
    r = await Receiver(answers=[429], headers={"Retry-After": "7"}).start()
    try:
        with pytest.raises(DeliveryError) as exc:
            await channels.send(channel(kind="slack", url=r.url), message(), http)
    finally:
        await r.stop()
    assert not exc.value.permanent and exc.value.retry_after == 7.0


async def test_refused_connection_and_timeout_are_retried(http: HttpClient) -> None:
    port = closed_port()
    with pytest.raises(DeliveryError, match="webhook mail") as refused:
        await channels.send(
            channel(kind="webhook", url=f"http://127.0.0.1:{port}"), message(), http
        )
    assert not refused.value.permanent
    slow = await Receiver(delay=0.5).start()
    try:
        cfg = channel(kind="webhook", url=slow.url, timeout=0.2)
        with pytest.raises(DeliveryError, match="no answer within 0.2s") as timed_out:
            await channels.send(cfg, message(), http)
    finally:
        await slow.stop()
    assert not timed_out.value.permanent
