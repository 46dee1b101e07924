"""One way to page every /api/v1 list: `limit` + `offset` in, the body stays a JSON list.

The total goes in `X-Total-Count` and the next page in `Link: <...>; rel="next"` (RFC 8288),
so existing clients that read the list keep working and new ones can walk the pages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Query, Request, Response

MAX_LIMIT = 1000
# well inside a 32-bit signed integer: a bigger OFFSET is a 422, not a driver overflow
MAX_OFFSET = 1_000_000_000


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int = 0


def pager(default: int = 100, maximum: int = MAX_LIMIT) -> Callable[..., Page]:
    """A FastAPI dependency reading `limit` (1..maximum) and `offset` (>= 0)."""

    def page(
        limit: int = Query(default, ge=1, le=maximum, description="Rows per page."),
        offset: int = Query(0, ge=0, le=MAX_OFFSET, description="Rows to skip."),
    ) -> Page:
        return Page(limit, offset)

    return page


page = pager()


def set_headers(request: Request, response: Response, page: Page, total: int) -> None:
    """`X-Total-Count`, and a `Link` to the next page while rows remain after this one."""
    response.headers["X-Total-Count"] = str(total)
    following = page.offset + page.limit
    if following < total:
        url = request.url.include_query_params(limit=page.limit, offset=following)
        response.headers["Link"] = f'<{url}>; rel="next"'
