"""Run an OutboxSender against a config until SIGTERM: the peer of test_notify_crash.py.

    python tests/notify_sender_script.py CONFIG --instance NAME --concurrency N --lease SECONDS

Prints "ready" once the loop runs. SIGTERM stops it cleanly (in-flight sends finish and are
recorded); the crash test sends SIGKILL instead.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from nachtwacht.clock import SystemClock
from nachtwacht.config import load_config
from nachtwacht.incidents.service import record_delivery
from nachtwacht.notify.sender import OutboxSender
from nachtwacht.store.db import Store


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--instance", default="script")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--lease", type=float, default=1.0)
    args = parser.parse_args()
    settings = load_config(args.config)
    store = Store(settings.store.url)
    sender = OutboxSender(
        store,
        settings,
        SystemClock(),
        args.instance,
        concurrency=args.concurrency,
        lease=args.lease,
        on_outcome=record_delivery,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await sender.loop(stop)
    await sender.close()
    store.dispose()
    print(f"stopped: sent {sender.sent}, failed {sender.failed}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
