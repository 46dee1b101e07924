"""Engine wiring: `install(runtime)` adds this package's modules and spool handlers."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nachtwacht.engine.runtime import Runtime


def install(runtime: Runtime) -> None:
    return None
