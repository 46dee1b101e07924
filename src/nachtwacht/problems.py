"""One error type for a request the domain refuses: what kind of refusal, which field, why.

Services raise `Problem` (or a domain's subclass of it, such as `IncidentError`) and know
nothing of HTTP or exit codes. The kind is mapped to an HTTP status once, in web/errors.py,
and to an exit code once, in cli/main.py, so a door never translates a service's error itself.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["invalid", "not_found", "conflict", "forbidden", "unauthenticated"]

HTTP_STATUS: dict[Kind, int] = {
    "invalid": 422,
    "not_found": 404,
    "conflict": 409,
    "forbidden": 403,
    "unauthenticated": 401,
}

# 2: the command was asked something wrong (as for a usage error); 1: it was refused as things stand
EXIT_CODE: dict[Kind, int] = {
    "invalid": 2,
    "not_found": 2,
    "conflict": 1,
    "forbidden": 1,
    "unauthenticated": 1,
}


class Problem(Exception):
    """A request that cannot be done: `kind` says why, `field` where, the message what."""

    kind: Kind = "invalid"

    def __init__(self, message: str, field: str | None = None, kind: Kind | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if kind is not None:
            self.kind = kind

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.kind]

    @property
    def exit_code(self) -> int:
        return EXIT_CODE[self.kind]
