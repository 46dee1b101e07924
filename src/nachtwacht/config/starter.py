"""Starter configs written by `nachtwacht init` (being written)."""

from __future__ import annotations

from pathlib import Path


def host_config() -> str:
    return """# Nachtwacht starter config
site: this-host
probes:
  - name: disk-root
    kind: host
    metric: disk
    mount: /
"""


def frappe_config(site: str, bench_path: Path) -> str:
    return host_config()
