"""The one MetaData every table module of the store is declared on, and the id type they share.

Times are UTC epoch seconds in double-precision columns: one portable type across SQLite,
PostgreSQL and MariaDB, cheap to compare and to bucket (`minute` and `hour` are stored
alongside so rollups group by a plain integer on every dialect).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Integer,
    MetaData,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# BIGINT autoincrement on PostgreSQL/MariaDB, INTEGER (rowid) on SQLite
BigId = BigInteger().with_variant(Integer(), "sqlite")
