"""The unmodified Sentry JavaScript SDK (`@sentry/node` from npm) reports to a real Nachtwacht.

tests/node/ pins the SDK in package.json and package-lock.json; `npm ci` installs it into
tests/node/node_modules (ignored by git) once per change of the lock file, under a file lock so
that parallel workers do not install it twice. Without `node` the test skips, also under
CI=true (the machine has no JavaScript); with `node` but no `npm`, or an install that fails,
it skips only outside CI.

tests/node/report.js sends a captured exception, a captureMessage, a user and a tag, and 20
exceptions captured at once from one line (the SDK's transport sends them in parallel), then
flushes; the events arrive through the spool and the drainer of the running server, grouped.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import pytest

from nachtwacht.errors import issues
from nachtwacht.store.db import Store
from tests.conftest import IN_CI
from tests.helpers import until_sync
from tests.test_errors_fixtures import add_project, events
from tests.test_errors_sentry_sdk import served  # noqa: F401 - the live server fixture

NODE_DIR = Path(__file__).resolve().parent / "node"
MIN_NODE = (20, 19)  # @sentry/node 11's engines


def _unavailable(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: node is installed, so the Node SDK test must run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def node_sdk() -> str:
    """The `node` binary, with tests/node's locked dependencies installed."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    found = tuple(int(p) for p in version.stdout.strip().lstrip("v").split(".")[:2])
    if found < MIN_NODE:
        _unavailable(f"node {version.stdout.strip()} is older than @sentry/node needs")
    npm = shutil.which("npm")
    if npm is None:
        _unavailable("npm is not installed")
    digest = hashlib.sha256((NODE_DIR / "package-lock.json").read_bytes()).hexdigest()
    stamp = NODE_DIR / "node_modules" / ".installed-lock-sha256"
    with open(NODE_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another xdist worker may be installing it now
        if not stamp.exists() or stamp.read_text() != digest:
            run = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=NODE_DIR,
                capture_output=True,
                text=True,
                timeout=300,
                env={**os.environ, "NODE_ENV": "production"},
            )
            if run.returncode != 0:
                _unavailable(f"npm ci failed: {run.stderr.strip()[-500:]}")
            stamp.write_text(digest)
    return node


def _send(node: str, dsn: str) -> dict[str, Any]:
    run = subprocess.run(
        [node, str(NODE_DIR / "report.js"), dsn],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    out: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return out


@pytest.mark.serial
def test_sentry_node_sdk_events_arrive_grouped(
    node_sdk: str,  # first: a machine without node skips before a server is started
    served: tuple[str, Store],  # noqa: F811 - the imported fixture
) -> None:
    address, store = served
    project = add_project(store, "shop")
    dsn = f"http://{project['public_key']}@{address}/{project['id']}"
    out = _send(node_sdk, dsn)
    assert out["flushed"] is True and out["sdk"] == "11.16.0"
    ids = out["ids"]
    sent = [ids["exception"], ids["message"], *ids["parallel"]]
    assert len(set(sent)) == 22 and all(sent)
    until_sync(lambda: events(store) >= 22, "the 22 events stored by the drainer", 20)

    with store.connect() as conn:
        rows, total = issues.list_issues(conn, sort="count", limit=None)
        details = {r["title"]: issues.detail(conn, r["id"], 2e9) for r in rows}
        stored = {e["event_id"] for d in details.values() for e in d["recent_events"]}
    assert total == 3, list(details)
    assert stored == set(sent)
    [parallel] = [t for t in details if t.startswith("RangeError: customer ")]
    assert parallel.endswith(" not found")  # the first of the 20 stored names the issue
    assert {t: d["count"] for t, d in details.items()} == {
        parallel: 20,
        "TypeError: order 17 has no total": 1,
        "cache warmed in 35 ms": 1,
    }
    order = details["TypeError: order 17 has no total"]
    assert order["culprit"] == "report in parseOrder"
    assert details[parallel]["culprit"] == "report in loadCustomer"
    assert order["environment"] == "staging" and order["first_release"] == "shop-js@2.0.1"
    assert details["cache warmed in 35 ms"]["level"] == "info"
    for title, detail in details.items():
        latest = detail["latest_event"]
        assert latest["platform"] == "node", title
        assert latest["sdk"] == {"name": "sentry.javascript.node", "version": "11.16.0"}
        assert latest["tags"]["tenant"] == "acme"
        assert latest["user"] == {"id": "u-7", "email": "bo@example.org"}
        assert detail["users_affected"] == 1
    assert order["latest_event"]["event_id"] == ids["exception"]
    frames = order["latest_event"]["exceptions"][0]["frames"]
    assert frames[-1]["function"] == "parseOrder" and frames[-1]["in_app"]
    assert "throw new TypeError" in frames[-1]["context_line"]
