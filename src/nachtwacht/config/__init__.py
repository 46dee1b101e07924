"""The nachtwacht.yaml schema and its loader.

The names below load on first use: `config.redact` and `config.limits` are imported by the
domain models the schema itself imports, so loading the schema here would close a cycle
(notify.models -> config -> schema -> notify.models) for whoever imports a model first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nachtwacht.config.loader import ConfigError, load_config, resolve_config_path
    from nachtwacht.config.schema import Settings

__all__ = ["ConfigError", "Settings", "load_config", "resolve_config_path"]


def __getattr__(name: str) -> Any:
    if name in ("ConfigError", "load_config", "resolve_config_path"):
        from nachtwacht.config import loader

        return getattr(loader, name)
    if name == "Settings":
        from nachtwacht.config.schema import Settings

        return Settings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
