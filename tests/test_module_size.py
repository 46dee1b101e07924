"""No module over ~400 lines without a reason written at its top (issue 15): a long module is
either split by what it holds or says, in its docstring, "Why one module ...". A module that
grows past the limit fails here until it is split or explains itself."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "nachtwacht"
LIMIT = 420  # "about 400": a few lines of growth do not force a split


def test_every_long_module_says_why_it_is_one() -> None:
    silent = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        lines = text.count("\n")
        if lines <= LIMIT:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if "Why one module" not in doc:
            silent.append(f"{path.relative_to(SRC)} ({lines} lines)")
    assert not silent, "split these or say at the top why each is one module: " + ", ".join(silent)
