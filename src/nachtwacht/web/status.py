"""One middleware that watches each response's status and, once it is sent, hands it on.

`ResponseStatus` sees the status line the app sends (a refusal of BodyLimits, inside it,
included) and, after the response has gone out, calls its hooks in order with the ASGI scope
and that status. The app's hooks are the audit of changes (`auth.deps.audit_change`) and the
security log (`analytics.security.log_request`). A request that raised before answering, or a
scope that is not HTTP, reaches no hook.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

StatusHook = Callable[[dict[str, Any], int], Awaitable[None]]


class ResponseStatus:
    def __init__(self, app: Any, hooks: Sequence[StatusHook]) -> None:
        self.app = app
        self.hooks = tuple(hooks)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        await self.app(scope, receive, watch)
        if not status:
            return
        for hook in self.hooks:
            await hook(scope, status[0])
