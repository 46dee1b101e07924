"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, a real server.

`browser` launches /usr/bin/chromium (never a browser Playwright downloads; see
docs/decisions/0009) headless; Playwright gives every launch a fresh, temporary user-data
directory of its own. `live_server` is a real `nachtwacht serve` process on a free port with a
store in a temporary directory, a tcp probe against a listening socket the test can close, and
users made with `nachtwacht user add`. Both are module-scoped: one browser and one server per
test file keep the file fast; every test gets its own browser context (its own cookies).
A test module imports the `*_fixture` functions (each registers its fixture by `name=`).

The tests use Playwright's sync API in plain `def` tests: pytest-asyncio runs `async def`
tests inside an event loop, and the sync API refuses to start inside a running loop.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.conftest import IN_CI, free_port
from tests.helpers import until_sync

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

CHROMIUM = Path(os.environ.get("NACHTWACHT_TEST_CHROMIUM", "/usr/bin/chromium"))
# --disable-background-networking and friends: without them Chromium keeps trying to reach
# Google's hosts, which this closed network refuses at every start
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root in CI, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
BIN = Path(sys.executable).parent / "nachtwacht"
PASSWORD = "correct horse battery"
# Playwright's `expect` waits up to this long; every wait in the browser tests is bounded by it
EXPECT_TIMEOUT_MS = 15_000


def need_browser(module_level: bool = False) -> None:
    """Skip (or under CI=true fail) when Debian's Chromium or the playwright package is missing.

    A test module that imports playwright calls this (module_level=True) before the import.
    Under CI=true that call lets collection go on, so that each browser test fails (in the
    `browser` fixture) and the rest of the suite still runs.
    """
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (Debian package chromium: scripts/install-debian-packages.sh)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install -r requirements-dev.lock)")
    if not missing:
        return
    message = "browser tests need " + " and ".join(missing)
    if IN_CI and module_level:
        return
    if IN_CI:
        pytest.fail(f"{message} (CI=true requires it; make test installs both)")
    pytest.skip(message, allow_module_level=module_level)


@pytest.fixture(name="browser", scope="module")
def browser_fixture() -> Iterator[Browser]:
    """Headless Debian Chromium, for the whole test module."""
    need_browser()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as pw:
        # launch() starts Chromium with a new, empty --user-data-dir in a temporary directory
        # and removes it on close (it refuses a --user-data-dir argument of ours)
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(name="context")
def context_fixture(browser: Browser, live_server: LiveServer) -> Iterator[BrowserContext]:
    """A fresh browser context (no cookies) whose relative URLs go to the live server."""
    ctx = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(EXPECT_TIMEOUT_MS)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture(name="page")
def page_fixture(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture(name="shot")
def shot_fixture(request: pytest.FixtureRequest) -> Screenshots:
    """Saves numbered screenshots named after the test into test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    return Screenshots(re.sub(r"[^\w.-]+", "_", request.node.name))


@dataclass
class Screenshots:
    test: str
    count: int = 0

    def __call__(self, page: Page, step: str) -> Path:
        self.count += 1
        path = ARTIFACTS / f"{self.test}-{self.count:02d}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@dataclass
class LiveServer:
    url: str
    config: Path
    log: Path
    targets: dict[str, socket.socket] = field(default_factory=dict)

    def stop_target(self, probe: str) -> None:
        """Close the socket the probe checks: from now on its connections are refused."""
        self.targets.pop(probe).close()

    def token(self, role: str) -> str:
        """A new API token with this role, made by the CLI."""
        made = _cli(
            "token",
            "create",
            f"browser-{role}-{time.monotonic_ns()}",
            "--role",
            role,
            config=self.config,
        )
        return next(w for w in made.split() if w.startswith("nwt_"))

    def api(self, role: str = "admin") -> httpx.Client:
        """An HTTP client for the API, authenticated with a new token of this role."""
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token(role)}"},
            timeout=10,
        )


def _cli(*args: str, config: Path, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(BIN), *args, "--config", str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"nachtwacht {' '.join(args)}: {done.stderr}"
    return done.stdout


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    # nobody accepts: the kernel completes each probe's handshake into the backlog, so a deep
    # one keeps the probe ok for an hour of 1-second checks, far longer than the tests run
    sock.listen(4096)
    return sock


USERS = {"alice": "responder", "vera": "viewer", "lockme": "responder"}


@pytest.fixture(name="live_server", scope="module")
def live_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """`nachtwacht serve` as a real process, with the users in USERS (password PASSWORD).

    Probes: `db-port` (component db) and `web-port` (component web), tcp checks every second
    against listening sockets this fixture holds; `stop_target(name)` closes one.
    """
    tmp = tmp_path_factory.mktemp("live")
    targets = {"db-port": _listening_socket(), "web-port": _listening_socket()}
    config = tmp / "nachtwacht.yaml"
    config.write_text(
        f"""site: browser-test
store:
  url: "sqlite:///{tmp / "nachtwacht.db"}"
engine:
  startup_spread: 0.2s
  flush_interval: 0.2s
auth:
  # every attempt comes from 127.0.0.1: keep the per-address throttle out of the way of
  # the per-account lockout the tests look at
  ip_max_failures: 1000
components:
  db: Database
  web: Web server
probes:
  - name: db-port
    kind: tcp
    host: 127.0.0.1
    port: {targets["db-port"].getsockname()[1]}
    interval: 1s
    retries: 0
    component: db
  - name: web-port
    kind: tcp
    host: 127.0.0.1
    port: {targets["web-port"].getsockname()[1]}
    interval: 1s
    retries: 0
    component: web
""",
        encoding="utf-8",
    )
    # the CLI migrates the store; add the users side by side (each costs an argon2 hash)
    adders = [
        subprocess.Popen(
            [str(BIN), "user", "add", name, "--role", role, "--password-stdin"]
            + ["--config", str(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, role in USERS.items()
    ]
    for proc in adders:
        _out, err = proc.communicate(PASSWORD + "\n", timeout=60)
        assert proc.returncode == 0, f"nachtwacht user add: {err}"

    with serving(config, tmp, targets) as server:
        yield server


@contextmanager
def serving(config: Path, tmp: Path, targets: dict[str, socket.socket]) -> Iterator[LiveServer]:
    """A real `nachtwacht serve` on `config`, up and answering; stopped (and its probe
    targets closed) on the way out."""
    port = free_port()  # serve cannot report a port it chose itself
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN), "serve", "--config", str(config), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", config, log, targets)
    try:
        _wait_until_serving(server, proc)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        for sock in server.targets.values():
            sock.close()


def _wait_until_serving(server: LiveServer, proc: subprocess.Popen[bytes]) -> None:
    """Poll /healthz until the server answers (bounded: a server that never starts fails).

    The bound covers a cold start on a loaded 2-core machine (30 s was not enough there).
    """

    def serving_or_gone() -> bool:
        if proc.poll() is not None:
            return True
        try:
            return httpx.get(f"{server.url}/healthz", timeout=5).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    try:
        until_sync(serving_or_gone, "nachtwacht serve to answer /healthz", 120, interval=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n{server.log.read_text()}") from None
    if proc.poll() is not None:
        raise AssertionError(f"nachtwacht serve exited:\n{server.log.read_text()}")
