"""The `nachtwacht verify` command (the restoration checklist)."""

from __future__ import annotations
