"""The nachtwacht.yaml schema and its loader."""

from nachtwacht.config.loader import ConfigError, load_config, resolve_config_path
from nachtwacht.config.schema import Settings

__all__ = ["ConfigError", "Settings", "load_config", "resolve_config_path"]
