"""Autogenerate an Alembic migration from store/tables.py against a scratch SQLite database.

    .venv/bin/python scripts/make-migration.py 0004 "error tracking, analytics, runbooks"

An existing file for the same revision id is replaced (only do that before it has landed).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine

from nachtwacht.store.migrate import MIGRATIONS, alembic_config


def main() -> None:
    rev, message = sys.argv[1], sys.argv[2]
    versions = MIGRATIONS / "versions"
    for old in versions.glob(f"{rev}_*.py"):
        old.unlink()
    heads = sorted(p.name.split("_")[0] for p in versions.glob("[0-9]*_*.py"))
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{Path(tmp) / 'scratch.db'}")
        cfg = alembic_config(engine)
        command.upgrade(cfg, heads[-1] if heads else "base")
        slug = message.lower().replace(",", "").replace(" ", "_")[:40]
        cfg.set_main_option("file_template", f"{rev}_{slug}")
        command.revision(cfg, message=message, autogenerate=True, rev_id=rev)
    created = next(versions.glob(f"{rev}_*.py"))
    subprocess.run([sys.executable, "-m", "ruff", "format", "-q", str(created)], check=True)
    subprocess.run([sys.executable, "-m", "ruff", "check", "-q", "--fix", str(created)])
    print(created)


if __name__ == "__main__":
    main()
