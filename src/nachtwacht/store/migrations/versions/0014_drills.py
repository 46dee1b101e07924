"""drills: the drills table, their reminders, and drill_id on incidents and alerts

Revision ID: 0014
Revises: 0016
Create Date: 2026-12-08 05:00:00

Two nullable columns added (NULL for every existing row: none was a drill) and new tables.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("incidents", sa.Column("drill_id", sa.Integer(), nullable=True))
    op.add_column("alerts", sa.Column("drill_id", sa.Integer(), nullable=True))
    op.create_table(
        "drills",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("scenario", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("started_by", sa.String(length=120), nullable=False),
        sa.Column("ended_at", sa.Double(), nullable=True),
        sa.Column("incident_id", sa.Integer(), nullable=True),
        sa.Column("steps_json", sa.Text(), nullable=True),
        sa.Column("measures_json", sa.Text(), nullable=True),
        sa.Column("result", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drills")),
    )
    op.create_index("ix_drills_status", "drills", ["status"])
    op.create_index("ix_drills_started_at", "drills", ["started_at"])
    op.create_table(
        "drill_reminders",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("schedule", sa.String(length=32), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("due_at", sa.Double(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("sent_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drill_reminders")),
        sa.UniqueConstraint("schedule", "period", name=op.f("uq_drill_reminders_schedule_period")),
    )


def downgrade() -> None:
    op.drop_table("drill_reminders")
    op.drop_index("ix_drills_started_at", table_name="drills")
    op.drop_index("ix_drills_status", table_name="drills")
    op.drop_table("drills")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("drill_id")
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("drill_id")
