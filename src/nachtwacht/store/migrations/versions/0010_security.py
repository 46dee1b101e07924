"""security monitoring: address blocks and daily tallies

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 04:30:00

New tables only; nothing existing is rewritten.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "security_blocks",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("applied_at", sa.Double(), nullable=True),
        sa.Column("removed_at", sa.Double(), nullable=True),
        sa.Column("removed_by", sa.String(length=120), nullable=True),
        sa.Column("incident_id", sa.Integer(), nullable=True),
        sa.Column("rule", sa.String(length=64), nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_until", sa.Double(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_blocks")),
    )
    op.create_index("ix_security_blocks_state_expires", "security_blocks", ["state", "expires_at"])
    op.create_index("ix_security_blocks_address", "security_blocks", ["address"])
    op.create_table(
        "security_tallies",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("last_ts", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_tallies")),
        sa.UniqueConstraint("day", "kind", "key", name=op.f("uq_security_tallies_day_kind_key")),
    )
    op.create_index("ix_security_tallies_kind_day", "security_tallies", ["kind", "day"])


def downgrade() -> None:
    op.drop_index("ix_security_tallies_kind_day", table_name="security_tallies")
    op.drop_table("security_tallies")
    op.drop_index("ix_security_blocks_address", table_name="security_blocks")
    op.drop_index("ix_security_blocks_state_expires", table_name="security_blocks")
    op.drop_table("security_blocks")
