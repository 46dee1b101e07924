"""A real program using the unmodified `sentry-sdk` reports to a real uvicorn serving Nachtwacht.

The program raises exceptions: two from the same line with different numbers in the message
(one issue), one from another function (another issue), and two log messages that differ only
in a number (one issue). It runs twice: with the SDK's default compression (brotli, since the
`brotli` module is installed) and with gzip. The events arrive through the spool and the
drainer of the running engine, grouped as expected.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from nachtwacht.errors import issues
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.conftest import free_port
from tests.helpers import settings_for, until_sync
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
    settings = settings_for(
        f"spool:\n  dir: {tmp_path / 'spool'}\nengine:\n  startup_spread: 0.1s\n",
        sqlite_store.url,
    )
    port = free_port()
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
