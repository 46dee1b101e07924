"""The `http` probe against real aiohttp servers on 127.0.0.1 (plain and TLS)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError

from nachtwacht.clock import FakeClock, SystemClock
from nachtwacht.probes.context import ProbeContext
from nachtwacht.probes.kinds.http import Config, ProbeImpl, der_not_after
from nachtwacht.probes.results import Status
from tests.conftest import closed_port, free_port
from tests.helpers import TcpTarget

DAY = 86400.0


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: str
    peer: tuple[str, int]


@dataclass
class Target:
    """A running aiohttp server and the requests it has received."""

    base: str
    seen: list[Seen] = field(default_factory=list)

    def url(self, path: str = "/") -> str:
        return self.base + path


def _app(target: Target) -> web.Application:
    async def record(request: web.Request) -> None:
        target.seen.append(
            Seen(
                request.method,
                request.path,
                dict(request.headers),
                await request.text(),
                request.transport.get_extra_info("peername") if request.transport else ("", 0),
            )
        )

    async def home(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="hello from nachtwacht target")

    async def slow(request: web.Request) -> web.Response:
        await record(request)
        await asyncio.sleep(float(request.query["delay"]))
        return web.Response(text="slow but fine")

    async def error(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=500, text="internal error")

    async def created(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=201, text="created")

    async def maintenance(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="<h1>Site down for maintenance</h1>")

    async def redirect(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPFound("/")

    app = web.Application()
    app.router.add_route("*", "/", home)
    app.router.add_get("/slow", slow)
    app.router.add_get("/error", error)
    app.router.add_get("/created", created)
    app.router.add_get("/maintenance", maintenance)
    app.router.add_get("/redirect", redirect)
    return app


async def _serve(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Target]:
    scheme = "https" if ssl_context else "http"
    target = Target("")
    # Cancel handlers whose client went away, so a slow route never holds up teardown.
    runner = web.AppRunner(_app(target), shutdown_timeout=0.2, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    target.base = f"{scheme}://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield target
    finally:
        await runner.cleanup()


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    async for t in _serve():
        yield t


@pytest.fixture
async def ctx() -> AsyncIterator[ProbeContext]:
    context = ProbeContext(clock=FakeClock())
    yield context
    await context.close()


def make(ctx: ProbeContext, url: str, **keys: Any) -> ProbeImpl:
    return ProbeImpl(Config(name="web", kind="http", url=url, **keys), ctx)


# --- status codes, bodies, redirects, requests -------------------------------------------


async def test_200_with_body_is_ok_with_status_and_latency(
    target: Target, ctx: ProbeContext
) -> None:
    result = await make(ctx, target.url("/")).check()
    assert result.status is Status.OK
    assert result.message.startswith("HTTP 200 in ")
    assert result.value == 200
    assert result.latency_ms is not None and 0 < result.latency_ms < 1000
    assert [s.path for s in target.seen] == ["/"]


async def test_500_is_critical_naming_the_code_and_what_was_expected(
    target: Target, ctx: ProbeContext
) -> None:
    result = await make(ctx, target.url("/error")).check()
    assert result.status is Status.CRITICAL
    assert result.message == "HTTP 500, expected 200"
    assert result.value == 500
    assert result.latency_ms is not None


async def test_expected_status_as_a_single_int_accepts_that_code(
    target: Target, ctx: ProbeContext
) -> None:
    probe = make(ctx, target.url("/error"), expected_status=500)
    assert probe.config.expected_status == [500]
    assert (await probe.check()).status is Status.OK
    # The same config now rejects the 200 it no longer expects.
    assert (await make(ctx, target.url("/"), expected_status=500).check()).status is (
        Status.CRITICAL
    )


async def test_expected_status_as_a_list_accepts_any_listed_code(
    target: Target, ctx: ProbeContext
) -> None:
    assert (await make(ctx, target.url("/created"), expected_status=[200, 201]).check()).status is (
        Status.OK
    )
    result = await make(ctx, target.url("/created"), expected_status=[200, 204]).check()
    assert result.status is Status.CRITICAL
    assert result.message == "HTTP 201, expected 200, 204"


def test_expected_status_must_be_integers() -> None:
    with pytest.raises(ValidationError):
        Config(name="web", kind="http", url="http://127.0.0.1/", expected_status="ok")


async def test_body_contains_is_ok_when_the_text_is_there(
    target: Target, ctx: ProbeContext
) -> None:
    result = await make(ctx, target.url("/"), body_contains="hello from").check()
    assert result.status is Status.OK


async def test_body_lacking_the_expected_text_is_critical(
    target: Target, ctx: ProbeContext
) -> None:
    result = await make(ctx, target.url("/maintenance"), body_contains="hello from").check()
    assert result.status is Status.CRITICAL
    assert result.message == "HTTP 200 but body lacks 'hello from'"
    assert result.value == 200


async def test_body_containing_a_forbidden_text_is_critical(
    target: Target, ctx: ProbeContext
) -> None:
    result = await make(ctx, target.url("/maintenance"), body_not_contains="maintenance").check()
    assert result.status is Status.CRITICAL
    assert result.message == "HTTP 200 but body contains 'maintenance'"
    ok = await make(ctx, target.url("/"), body_not_contains="maintenance").check()
    assert ok.status is Status.OK


async def test_redirect_is_followed_to_the_final_page(target: Target, ctx: ProbeContext) -> None:
    result = await make(ctx, target.url("/redirect"), body_contains="hello from").check()
    assert result.status is Status.OK
    assert result.value == 200
    assert [s.path for s in target.seen] == ["/redirect", "/"]


async def test_redirect_not_followed_is_judged_on_its_own_status(
    target: Target, ctx: ProbeContext
) -> None:
    result = await make(ctx, target.url("/redirect"), follow_redirects=False).check()
    assert result.status is Status.CRITICAL
    assert result.message == "HTTP 302, expected 200"
    assert [s.path for s in target.seen] == ["/redirect"]
    expected = make(ctx, target.url("/redirect"), follow_redirects=False, expected_status=302)
    assert (await expected.check()).status is Status.OK


async def test_custom_headers_reach_the_server(target: Target, ctx: ProbeContext) -> None:
    headers = {"X-Nachtwacht-Probe": "web-1", "Authorization": "Bearer s3cret"}
    result = await make(ctx, target.url("/"), headers=headers).check()
    assert result.status is Status.OK
    (seen,) = target.seen
    assert seen.headers["X-Nachtwacht-Probe"] == "web-1"
    assert seen.headers["Authorization"] == "Bearer s3cret"


async def test_head_request_is_sent_as_head(target: Target, ctx: ProbeContext) -> None:
    result = await make(ctx, target.url("/"), method="HEAD").check()
    assert result.status is Status.OK
    assert [(s.method, s.body) for s in target.seen] == [("HEAD", "")]


async def test_post_sends_its_body(target: Target, ctx: ProbeContext) -> None:
    probe = make(ctx, target.url("/"), method="POST", body='{"ping": 1}', body_contains="hello")
    result = await probe.check()
    assert result.status is Status.OK
    assert [(s.method, s.body) for s in target.seen] == [("POST", '{"ping": 1}')]


async def test_probes_share_one_kept_alive_connection(target: Target, ctx: ProbeContext) -> None:
    # The engine's CPU budget (333 checks/s) relies on keep-alive through ctx.http_session().
    first, second = make(ctx, target.url("/")), make(ctx, target.url("/"), method="HEAD")
    for probe in (first, second, first):
        assert (await probe.check()).status is Status.OK
    assert len(target.seen) == 3
    assert len({s.peer for s in target.seen}) == 1


# --- latency and timeouts -----------------------------------------------------------------


async def test_fast_answer_under_latency_limits_is_ok(target: Target, ctx: ProbeContext) -> None:
    probe = make(ctx, target.url("/"), latency_warn=0.5, latency_critical=1.0)
    assert (await probe.check()).status is Status.OK


async def test_answer_slower_than_latency_warn_is_warning(
    target: Target, ctx: ProbeContext
) -> None:
    probe = make(ctx, target.url("/slow?delay=0.15"), latency_warn="100ms", latency_critical=5)
    result = await probe.check()
    assert result.status is Status.WARNING
    assert "slower than 0.1s" in result.message
    assert result.latency_ms is not None and result.latency_ms >= 150


async def test_answer_slower_than_latency_critical_is_critical(
    target: Target, ctx: ProbeContext
) -> None:
    probe = make(ctx, target.url("/slow?delay=0.15"), latency_warn=0.05, latency_critical=0.1)
    result = await probe.check()
    assert result.status is Status.CRITICAL
    assert "slower than 0.1s" in result.message
    assert result.value == 200


async def test_answer_slower_than_the_timeout_is_critical_not_an_exception(
    target: Target, ctx: ProbeContext
) -> None:
    probe = make(ctx, target.url("/slow?delay=5"), timeout=0.3)
    started = time.perf_counter()
    result = await probe.check()
    elapsed = time.perf_counter() - started
    assert result.status is Status.CRITICAL
    assert result.message.startswith("timed out after 0.3s")
    assert 0.25 < elapsed < 1.5


async def test_run_times_out_a_server_that_never_answers(ctx: ProbeContext) -> None:
    # Accepts the connection and reads the request, but never writes a response.
    connections: list[asyncio.StreamWriter] = []

    async def hang(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        probe = make(ctx, f"http://127.0.0.1:{port}/", timeout=0.3)
        started = time.perf_counter()
        result = await probe.run()
        elapsed = time.perf_counter() - started
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()
    assert len(connections) == 1
    assert result.status is Status.CRITICAL
    assert result.message.startswith("timed out after 0.3s")
    assert 0.25 < elapsed < 1.5
    assert result.latency_ms is not None and 250 < result.latency_ms < 1500


# --- connection failures ------------------------------------------------------------------


async def test_refused_port_is_critical_with_clear_message(ctx: ProbeContext) -> None:
    port = closed_port()
    result = await make(ctx, f"http://127.0.0.1:{port}/health").run()
    assert result.status is Status.CRITICAL
    assert result.message == f"cannot connect to 127.0.0.1:{port}: Connection refused"


async def test_unresolvable_host_is_critical_saying_dns_failed(ctx: ProbeContext) -> None:
    probe = make(ctx, "http://nachtwacht-test.invalid/", timeout=5)
    # `.invalid` never resolves (RFC 6761); bound it anyway on a machine with a slow resolver.
    result = await asyncio.wait_for(probe.check(), 10)
    assert result.status is Status.CRITICAL
    assert result.message.startswith("DNS lookup failed for nachtwacht-test.invalid: ")


async def test_server_closing_after_the_request_is_critical_naming_the_url(
    ctx: ProbeContext,
) -> None:
    async def read_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(read_then_close, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await make(ctx, f"http://127.0.0.1:{port}/x").check()
    finally:
        server.close()
        await server.wait_closed()
    assert result.status is Status.CRITICAL
    assert result.message == f"GET http://127.0.0.1:{port}/x failed: Server disconnected"


async def test_server_closing_at_once_is_critical_not_an_exception(ctx: ProbeContext) -> None:
    port = free_port()
    closer = TcpTarget(port)  # accepts, then closes before reading a byte
    await closer.start()
    try:
        result = await make(ctx, f"http://127.0.0.1:{port}/x").check()
    finally:
        await closer.stop()
    assert result.status is Status.CRITICAL
    # Whether the client sees a reset or an orderly close depends on packet timing.
    assert result.message in (
        f"GET http://127.0.0.1:{port}/x failed: Connection reset by peer",
        f"GET http://127.0.0.1:{port}/x failed: Server disconnected",
    )


# --- TLS ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path
    not_after: float  # epoch seconds


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    """A self-signed certificate for 127.0.0.1, valid from now for 5 days."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "5"]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    end = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-enddate"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return Cert(cert, key, ssl.cert_time_to_seconds(end.removeprefix("notAfter=")))


@pytest.fixture
async def tls_target(self_signed: Cert) -> AsyncIterator[Target]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(self_signed.cert, self_signed.key)
    async for t in _serve(context):
        yield t


@pytest.fixture
async def real_clock_ctx() -> AsyncIterator[ProbeContext]:
    context = ProbeContext(clock=SystemClock())
    yield context
    await context.close()


def at(clock_ctx: ProbeContext, when: float) -> ProbeContext:
    assert isinstance(clock_ctx.clock, FakeClock)
    clock_ctx.clock.set(when)
    return clock_ctx


async def test_certificate_expiring_within_warn_days_is_warning(
    tls_target: Target, real_clock_ctx: ProbeContext
) -> None:
    probe = make(real_clock_ctx, tls_target.url("/"), verify_tls=False, tls_expiry_warn_days=14)
    result = await probe.check()
    assert result.status is Status.WARNING
    assert result.message.endswith("; TLS certificate expires in 4.9 days")
    assert result.value == 200


async def test_certificate_expiring_within_critical_days_is_critical(
    tls_target: Target, real_clock_ctx: ProbeContext
) -> None:
    probe = make(
        real_clock_ctx,
        tls_target.url("/"),
        verify_tls=False,
        tls_expiry_warn_days=14,
        tls_expiry_critical_days=10,
    )
    result = await probe.check()
    assert result.status is Status.CRITICAL
    assert "TLS certificate expires in 4.9 days" in result.message


async def test_days_left_are_rounded_down_never_overstated(
    tls_target: Target, ctx: ProbeContext, self_signed: Cert
) -> None:
    # One minute after issue 4.9993 days are left: "5.0" would promise time that is not there.
    at(ctx, self_signed.not_after - 5 * DAY + 60)
    result = await make(ctx, tls_target.url("/"), verify_tls=False).check()
    assert result.status is Status.WARNING
    assert "TLS certificate expires in 4.9 days" in result.message


async def test_days_left_follow_the_probe_clock(
    tls_target: Target, ctx: ProbeContext, self_signed: Cert
) -> None:
    probe = make(ctx, tls_target.url("/"), verify_tls=False)  # warn 14, critical 3 by default
    at(ctx, self_signed.not_after - 30 * DAY)
    far = await probe.check()
    assert far.status is Status.OK
    assert "TLS" not in far.message
    at(ctx, self_signed.not_after - 2 * DAY)
    near = await probe.check()  # same kept-alive connection, clock moved on
    assert near.status is Status.CRITICAL
    assert "TLS certificate expires in 2.0 days" in near.message


async def test_expired_certificate_is_critical(
    tls_target: Target, ctx: ProbeContext, self_signed: Cert
) -> None:
    at(ctx, self_signed.not_after + 2 * DAY)
    # Even with only a warn limit configured, an expired certificate is not a mere warning.
    probe = make(ctx, tls_target.url("/"), verify_tls=False, tls_expiry_critical_days=None)
    result = await probe.check()
    assert result.status is Status.CRITICAL
    assert "TLS certificate expired on " in result.message
    assert time.strftime("%Y-%m-%d", time.gmtime(self_signed.not_after)) in result.message


async def test_certificate_is_read_for_head_and_post_too(
    tls_target: Target, ctx: ProbeContext, self_signed: Cert
) -> None:
    # Small or empty bodies end the response before the caller looks at the connection.
    at(ctx, self_signed.not_after - 2 * DAY)
    for keys in ({"method": "HEAD"}, {"method": "POST", "body": "x"}):
        result = await make(ctx, tls_target.url("/"), verify_tls=False, **keys).check()
        assert result.status is Status.CRITICAL, keys
        assert "TLS certificate expires in 2.0 days" in result.message


async def test_expiry_check_off_ignores_the_certificate(
    tls_target: Target, ctx: ProbeContext, self_signed: Cert
) -> None:
    at(ctx, self_signed.not_after + 2 * DAY)
    probe = make(
        ctx,
        tls_target.url("/"),
        verify_tls=False,
        tls_expiry_warn_days=None,
        tls_expiry_critical_days=None,
    )
    result = await probe.check()
    assert result.status is Status.OK
    assert "TLS" not in result.message


async def test_self_signed_certificate_is_rejected_when_verifying(
    tls_target: Target, ctx: ProbeContext
) -> None:
    result = await make(ctx, tls_target.url("/"), verify_tls=True).check()
    assert result.status is Status.CRITICAL
    assert "certificate" in result.message
    assert "self-signed" in result.message
    assert tls_target.base.removeprefix("https://") in result.message
    assert tls_target.seen == []


async def test_https_to_a_plain_http_port_is_critical_tls_failure(
    target: Target, ctx: ProbeContext
) -> None:
    url = target.url("/").replace("http://", "https://")
    result = await make(ctx, url, verify_tls=False).check()
    assert result.status is Status.CRITICAL
    assert result.message == f"TLS handshake with {url[8:-1]} failed: wrong version number"


def test_cert_fixture_is_valid_for_five_days(self_signed: Cert) -> None:
    # Guards the TLS tests above: their expected numbers assume this validity.
    assert abs(self_signed.not_after - (time.time() + 5 * DAY)) < 600


@pytest.mark.parametrize("days", [5, 10000])  # UTCTime until 2049, GeneralizedTime from 2050
def test_not_after_is_read_from_der(tmp_path: Path, days: int) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert = tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-keyout", str(tmp_path / "key.pem"), "-out", str(cert)]
        + ["-days", str(days), "-subj", "/CN=nachtwacht"],
        check=True,
        capture_output=True,
    )
    expected = ssl.cert_time_to_seconds(ssl._ssl._test_decode_cert(str(cert))["notAfter"])  # type: ignore[attr-defined]
    assert der_not_after(ssl.PEM_cert_to_DER_cert(cert.read_text())) == expected


def test_not_after_of_garbage_is_none() -> None:
    assert der_not_after(b"") is None
    assert der_not_after(b"\x30\x03\x02\x01\x05") is None
