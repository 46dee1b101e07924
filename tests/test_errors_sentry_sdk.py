"""A real program using the unmodified `sentry-sdk` reports to a real uvicorn serving Nachtwacht.

The program raises exceptions: two from the same line with different numbers in the message
(one issue), one from another function (another issue), and two log messages that differ only
in a number (one issue). It runs twice: with the SDK's default compression (brotli, since the
`brotli` module is installed) and with gzip. The events arrive through the spool and the
drainer of the running engine, grouped as expected.

A second program sets a user and logs through the `logging` integration (the user and the
logger show in the API and on the issue page); the issue is resolved through the API and the
same error sent again from a newer release: a regression, which raises an alert through the
pipeline (`GET /api/v1/alerts`) with a link to the issue page.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from nachtwacht.errors import issues
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.conftest import free_port
from tests.helpers import admin_token, settings_for, until_sync
from tests.test_errors_fixtures import add_project, events

PROGRAM = r"""
import json, sys
import sentry_sdk

dsn, algo = sys.argv[1], sys.argv[2]
options = {"_experiments": {"transport_compression_algo": algo}} if algo != "default" else {}
sentry_sdk.init(dsn=dsn, release="shop@1.4.2", environment="staging", **options)
sentry_sdk.set_tag("tenant", "acme")
ids = []


def parse_order(number):
    raise ValueError(f"order {number} has an invalid total")


def load_customer(customer_id):
    customers = {}
    return customers[f"cust-{customer_id}"]


for number in (17, 4242):
    try:
        parse_order(number)
    except ValueError:
        ids.append(sentry_sdk.capture_exception())
try:
    load_customer(7)
except KeyError:
    ids.append(sentry_sdk.capture_exception())
ids.append(sentry_sdk.capture_message("cache warmed in 35 ms"))
ids.append(sentry_sdk.capture_message("cache warmed in 1200 ms"))
sentry_sdk.flush(timeout=20)
# which body encoding the SDK used (a private attribute, read only to make the test say so)
print(json.dumps({"ids": ids, "algo": sentry_sdk.get_client().transport._compression_algo}))
"""


@pytest.fixture
def served(sqlite_store: Store, tmp_path: Path) -> Iterator[tuple[str, Store]]:
    """A real uvicorn serving Nachtwacht (engine, drainer, alert modules) on a free port.

    Also used by tests/test_errors_sentry_node.py."""
    port = free_port()
    settings = settings_for(
        f"spool:\n  dir: {tmp_path / 'spool'}\nengine:\n  startup_spread: 0.1s\n"
        f"server:\n  port: {port}\n",
        sqlite_store.url,
    )
    config = uvicorn.Config(
        create_app(settings, sqlite_store), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"127.0.0.1:{port}", sqlite_store
    finally:
        server.should_exit = True
        thread.join(20)


@pytest.mark.parametrize("algo", ["default", "gzip"])
def test_sentry_sdk_events_arrive_grouped(
    served: tuple[str, Store], tmp_path: Path, algo: str
) -> None:
    address, store = served
    project = add_project(store, "shop")
    dsn = f"http://{project['public_key']}@{address}/{project['id']}"
    script = tmp_path / "shop_app.py"
    script.write_text(PROGRAM)
    run = subprocess.run(
        [sys.executable, str(script), dsn, algo],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    sent = out["ids"]
    assert len(sent) == 5 and all(sent)
    assert out["algo"] == ("br" if algo == "default" else "gzip")
    until_sync(lambda: events(store) >= 5, "the 5 events stored by the drainer", 20)
    with store.connect() as conn:
        rows, total = issues.list_issues(conn, sort="count", limit=None)
        by_title = {r["title"]: r for r in rows}
        stored = {
            e["event_id"] for r in rows for e in issues.detail(conn, r["id"], 2e9)["recent_events"]
        }
        order = issues.detail(
            conn, by_title["ValueError: order 17 has an invalid total"]["id"], 2e9
        )
    assert stored == set(sent)
    assert total == 3, [r["title"] for r in rows]
    assert {t: r["count"] for t, r in by_title.items()} == {
        "ValueError: order 17 has an invalid total": 2,
        "KeyError: 'cust-7'": 1,
        "cache warmed in 35 ms": 2,
    }
    assert order["culprit"] == "__main__ in parse_order"
    assert order["environment"] == "staging" and order["first_release"] == "shop@1.4.2"
    assert order["category"] == "validation"
    latest = order["latest_event"]
    assert latest["event_id"] == sent[1]
    assert latest["tags"]["tenant"] == "acme"
    assert latest["sdk"]["name"].startswith("sentry.python")
    frames = latest["exceptions"][0]["frames"]
    assert frames[-1]["function"] == "parse_order"
    assert "raise ValueError" in frames[-1]["context_line"]
    assert by_title["KeyError: 'cust-7'"]["culprit"] == "__main__ in load_customer"


BILLING = r"""
import json, logging, sys
import sentry_sdk

dsn, release = sys.argv[1], sys.argv[2]
sentry_sdk.init(dsn=dsn, release=release, environment="production")
sentry_sdk.set_user({"id": "u-42", "email": "ann@example.org"})


def charge(order):
    raise RuntimeError(f"card declined for order {order}")


try:
    charge(7)
except RuntimeError:
    event_id = sentry_sdk.capture_exception()
# the logging integration turns an ERROR record into an event with its logger's name
logging.getLogger("shop.billing").error("payment provider timed out after %d s", 30)
sentry_sdk.flush(timeout=20)
print(json.dumps({"id": event_id}))
"""


def http(address: str, path: str, token: str, method: str = "GET") -> Any:
    request = urllib.request.Request(
        f"http://{address}{path}", method=method, headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        body = response.read().decode()
    return json.loads(body) if response.headers.get_content_type() == "application/json" else body


def run_billing(tmp_path: Path, dsn: str, release: str) -> str:
    script = tmp_path / "billing.py"
    script.write_text(BILLING)
    run = subprocess.run(
        [sys.executable, str(script), dsn, release],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    return str(json.loads(run.stdout.strip().splitlines()[-1])["id"])


def test_sentry_sdk_user_logger_and_a_regression_alert(
    served: tuple[str, Store], tmp_path: Path
) -> None:
    address, store = served
    project = add_project(store, "shop")
    dsn = f"http://{project['public_key']}@{address}/{project['id']}"
    token = admin_token(store)
    sent = run_billing(tmp_path, dsn, "shop@1.4.2")
    until_sync(lambda: events(store) >= 2, "the 2 events stored by the drainer", 20)

    listed = http(address, "/api/v1/errors/issues", token)
    by_title = {i["title"]: i for i in listed}
    assert set(by_title) == {
        "RuntimeError: card declined for order 7",
        "payment provider timed out after 30 s",
    }
    card_id = by_title["RuntimeError: card declined for order 7"]["id"]
    card = http(address, f"/api/v1/errors/issues/{card_id}", token)
    assert card["latest_event"]["event_id"] == sent
    assert card["latest_event"]["user"] == {"id": "u-42", "email": "ann@example.org"}
    assert card["users_affected"] == 1
    log_issue = by_title["payment provider timed out after 30 s"]
    logged = http(address, f"/api/v1/errors/issues/{log_issue['id']}", token)
    assert logged["latest_event"]["logger"] == "shop.billing"
    assert logged["level"] == "error"
    page = http(address, f"/errors/{card['id']}", token)
    assert "u-42" in page and "ann@example.org" in page
    assert "shop.billing" in http(address, f"/errors/{log_issue['id']}", token)

    # resolved, then seen again from a newer release: a regression
    http(address, f"/api/v1/errors/issues/{card['id']}/resolve", token, "POST")
    run_billing(tmp_path, dsn, "shop@1.5.0")
    until_sync(lambda: events(store) >= 4, "the 2 later events stored", 20)

    def regression() -> dict[str, Any] | None:
        fired = http(address, "/api/v1/alerts?status=firing", token)
        return next((a for a in fired if a["fingerprint"] == f"error-issue:{card['id']}"), None)

    until_sync(regression, "the regression alert", 20)
    alert = regression()
    assert alert is not None
    assert alert["title"] == "Regression in shop: RuntimeError: card declined for order 7"
    assert alert["source"] == "errors" and alert["component"] == "shop"
    assert alert["incident_id"] is not None and alert["severity"] == 3
    assert f"http://{address}/errors/{card['id']}" in alert["message"]
    assert "release shop@1.5.0" in alert["message"]
    reopened = http(address, f"/api/v1/errors/issues/{card['id']}", token)
    assert reopened["status"] == "unresolved" and reopened["regressed_at"] is not None
    errors_alerts = [
        a for a in http(address, "/api/v1/alerts?status=all", token) if a["source"] == "errors"
    ]
    assert len(errors_alerts) == 1  # the log message was never resolved: no regression
