"""kill -9 and clean restarts of a real sender process, counting deliveries per key."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.helpers import until
from tests.notify_helpers import Receiver, queue, webhook_messages

pytestmark = pytest.mark.serial  # kill -9 / restarts of real processes: see conftest

SCRIPT = Path(__file__).with_name("notify_sender_script.py")
ROOT = Path(__file__).parent.parent
MESSAGES = 50
CONCURRENCY = 4


@pytest.fixture
async def slow_receiver() -> AsyncIterator[Receiver]:
    r = await Receiver(delay=0.05).start()
    yield r
    await r.stop()


@pytest.fixture
def setup(tmp_path: Path, slow_receiver: Receiver) -> tuple[Store, Path]:
    db = tmp_path / "outbox.db"
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(
        f"""
store:
  url: sqlite:///{db}
notify:
  rate_limit_per_minute: 100000
  channels:
    hook: {{kind: webhook, url: "{slow_receiver.url}/hook"}}
"""
    )
    store = Store(f"sqlite:///{db}")
    store.migrate()
    queue(store, webhook_messages(MESSAGES), 0.0)  # due since 1970: due now
    return store, config


async def start(config: Path, name: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        str(config),
        "--instance",
        name,
        "--concurrency",
        str(CONCURRENCY),
        "--lease",
        # a send gives up at 0.8 of the lease and is sent again (at-least-once): with 1 s, a
        # loaded machine made sends that the receiver had taken "time out", duplicates the
        # kill did not cause. The restart takes over the dead process's rows at once anyway.
        "5.0",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)  # a cold start under load
    assert line.strip() == b"ready"
    return proc


def count(store: Store, status: str) -> int:
    with store.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(t.outbox).where(t.outbox.c.status == status)
        ).scalar_one()


async def test_kill_9_mid_outbox_loses_nothing_and_repeats_at_most_the_in_flight(
    setup: tuple[Store, Path], slow_receiver: Receiver
) -> None:
    store, config = setup
    first = await start(config, "first")
    try:
        await until(lambda: sum(slow_receiver.keys.values()) >= 15, "15 deliveries", interval=0.005)
        first.send_signal(signal.SIGKILL)
    finally:
        await first.wait()
    assert first.returncode == -signal.SIGKILL
    in_flight = count(store, "sending")
    assert 0 < in_flight <= CONCURRENCY  # killed mid-send, within the bound
    assert count(store, "sent") < MESSAGES

    second = await start(config, "second")
    try:
        await until(lambda: count(store, "sent") == MESSAGES, "every message sent")
    finally:
        second.send_signal(signal.SIGTERM)
        await second.wait()
    assert second.returncode == 0
    keys = slow_receiver.keys
    assert set(keys) == {f"k{i}" for i in range(MESSAGES)}  # every message arrived
    duplicates = sum(n - 1 for n in keys.values())
    assert duplicates <= in_flight  # only what was in flight at the kill went twice
    store.dispose()


async def test_sigterm_finishes_in_flight_sends_so_a_restart_sends_nothing_twice(
    setup: tuple[Store, Path], slow_receiver: Receiver
) -> None:
    store, config = setup
    first = await start(config, "first")
    try:
        await until(lambda: sum(slow_receiver.keys.values()) >= 15, "15 deliveries", interval=0.005)
    finally:
        first.send_signal(signal.SIGTERM)
        out, _ = await first.communicate()
    assert first.returncode == 0, out
    assert count(store, "sending") == 0  # everything in flight was recorded
    assert 0 < count(store, "sent") < MESSAGES

    second = await start(config, "second")
    try:
        await until(lambda: count(store, "sent") == MESSAGES, "every message sent")
    finally:
        second.send_signal(signal.SIGTERM)
        await second.wait()
    assert set(slow_receiver.keys) == {f"k{i}" for i in range(MESSAGES)}
    assert set(slow_receiver.keys.values()) == {1}  # zero duplicates
    store.dispose()
