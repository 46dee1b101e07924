"""Every probe kind by name. A kind is a module in `kinds/` exposing `Config` and `ProbeImpl`."""

from __future__ import annotations

import importlib
from functools import cache
from typing import Annotated, Any

from pydantic import Field

from nachtwacht.probes.base import Probe, ProbeConfig

KIND_MODULES: tuple[str, ...] = (
    "http",
    "tcp",
    "sql",
    "redis",
    "service",
    "command",
    "host",
    "heartbeat",
    "logfile",
    "peer",
)


@cache
def kinds() -> dict[str, tuple[type[ProbeConfig], type[Probe]]]:
    out: dict[str, tuple[type[ProbeConfig], type[Probe]]] = {}
    for name in KIND_MODULES:
        module = importlib.import_module(f"nachtwacht.probes.kinds.{name}")
        out[name] = (module.Config, module.ProbeImpl)
    return out


@cache
def config_union() -> Any:
    """The pydantic type of one entry of `probes:`, discriminated by `kind`."""
    classes = tuple(cfg for cfg, _ in kinds().values())
    return Annotated[
        classes[0] if len(classes) == 1 else _union(classes), Field(discriminator="kind")
    ]


def _union(classes: tuple[type, ...]) -> Any:
    from typing import Union

    return Union[classes]  # noqa: UP007 - built at run time from the registry


def build(config: ProbeConfig, ctx: Any) -> Probe:
    return kinds()[config.kind][1](config, ctx)
