"""Apply Alembic migrations programmatically: `serve`, `status` and tests all call `upgrade`."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
        cfg.attributes["engine"] = engine
    return cfg


# any number, the same in every process: the key of the lock around a migration
LOCK_KEY = 0x6E77_6D69  # "nwmi"


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate to `revision`; several processes starting at once migrate one after the other.

    On PostgreSQL a transaction-scoped advisory lock (the DDL is transactional: the second
    process then finds the store at head); on MariaDB a named lock for the session.
    """
    with engine.begin() as conn:
        dialect = engine.dialect.name
        if dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        elif dialect in ("mysql", "mariadb"):
            conn.execute(text("SELECT GET_LOCK('nachtwacht_migrate', 120)"))
        try:
            cfg = alembic_config(engine)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        finally:
            if dialect in ("mysql", "mariadb"):
                conn.execute(text("SELECT RELEASE_LOCK('nachtwacht_migrate')"))
