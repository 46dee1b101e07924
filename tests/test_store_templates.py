"""The `store` fixture's copies are what a real migration makes: same catalog, no rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, inspect, select

from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.store.migrate import alembic_config
from tests.conftest import _mariadb_store, _pg_store, migrated_store


def catalog(store: Store) -> dict[str, Any]:
    insp = inspect(store.engine)
    out: dict[str, Any] = {}
    for name in sorted(insp.get_table_names()):
        out[name] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                for c in insp.get_columns(name)
            ],
            "pk": insp.get_pk_constraint(name)["constrained_columns"],
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in insp.get_indexes(name)
            ),
            "fks": sorted(
                (f["name"] or "", tuple(f["constrained_columns"]), f["referred_table"])
                for f in insp.get_foreign_keys(name)
            ),
            "uniques": sorted(
                (u["name"] or "", tuple(u["column_names"]))
                for u in insp.get_unique_constraints(name)
            ),
        }
    return out


@pytest.fixture
def freshly_migrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    backend = request.node.callspec.params["store"]
    if backend == "sqlite":
        gen: Iterator[Store] = iter([Store(f"sqlite:///{tmp_path / 'real.db'}")])
    elif backend == "postgresql":
        gen = _pg_store()
    else:
        gen = _mariadb_store()
    real = next(gen)
    real.migrate()
    yield real
    real.dispose()
    for _ in gen:
        pass


def test_a_copied_store_has_the_catalog_of_a_real_migration(
    store: Store, freshly_migrated: Store
) -> None:
    assert catalog(store) == catalog(freshly_migrated)


def test_a_copied_store_is_at_head_and_empty(store: Store) -> None:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with store.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head
        for table in t.metadata.sorted_tables:
            assert conn.execute(select(func.count()).select_from(table)).scalar() == 0, table
    store.migrate()  # a no-op at head, as for every store a test migrates again


def test_each_copy_is_its_own_database(
    store: Store, migrated_templates: Any, tmp_path: Path
) -> None:
    with store.begin() as conn:
        conn.execute(t.engine_meta.insert().values(key="mine", value="1", updated_at=0.0))
    backend = {"mysql": "mariadb"}.get(store.dialect, store.dialect)
    other_gen = migrated_store(migrated_templates, backend, tmp_path / "other")
    other = next(other_gen)
    try:
        with other.connect() as conn:
            assert conn.execute(select(func.count()).select_from(t.engine_meta)).scalar() == 0
    finally:
        for _ in other_gen:
            pass
