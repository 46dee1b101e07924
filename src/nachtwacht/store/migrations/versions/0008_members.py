"""members: the serve processes sharing one store

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 02:00:00

One row per `nachtwacht serve` process (docs/decisions/0024-several-processes-one-store.md):
its heartbeat counter, role and the number of probes it checks. A new table only.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "members",
        sa.Column("id", sa.String(length=120), nullable=False),
        sa.Column("host", sa.String(length=100), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("heartbeat_at", sa.Double(), nullable=False),
        sa.Column("beat", sa.Integer(), nullable=False),
        sa.Column("probes_owned", sa.Integer(), nullable=False),
        sa.Column("dead_at", sa.Double(), nullable=True),
        sa.Column("dead_by", sa.String(length=120), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_members")),
    )


def downgrade() -> None:
    op.drop_table("members")
