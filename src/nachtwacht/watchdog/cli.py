"""The `nachtwacht doctor` command."""

from __future__ import annotations
