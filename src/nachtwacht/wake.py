"""A wake-up signal for an asyncio loop that may be set from any thread.

A worker loop (the outbox sender, the spool drainer) waits for new work or its timer; whoever
commits new work calls `set()`, from the loop's own thread or another one (a thread pool, the
result writer). Before the loop is bound (`bind()` in the loop, or `wait()`), `set()` marks the
event directly; afterwards a call from another thread is handed to the loop thread-safely,
since asyncio.Event is not thread-safe. A call after the loop closed is dropped: nothing waits.
"""

from __future__ import annotations

import asyncio
from typing import Literal


class Wake:
    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self) -> None:
        """Call in the loop that waits: from then on other threads hand `set()` to it."""
        self._loop = asyncio.get_running_loop()

    def set(self) -> None:
        """Wake the waiting loop now. Safe to call from any thread."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop:
            self._event.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._event.set)

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> Literal[True]:
        return await self._event.wait()
