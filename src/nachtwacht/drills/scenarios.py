"""The built-in drill scenarios (one per incident procedure of the protocol), as YAML files."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from nachtwacht.drills.models import Scenario

BUILTIN_DIR = Path(__file__).parent / "scenarios"


@lru_cache(maxsize=1)
def builtin() -> dict[str, Scenario]:
    out = {}
    for path in sorted(BUILTIN_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        out[path.stem] = Scenario.model_validate({"name": path.stem, **data})
    return out


def get(name: str) -> Scenario | None:
    return builtin().get(name)
