"""status page: customer notices and subscribers

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08 04:30:00

New tables only; nothing existing is rewritten.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "status_notices",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("public_status", sa.String(length=16), nullable=False),
        sa.Column("components_json", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("approved_by", sa.String(length=120), nullable=True),
        sa.Column("published_at", sa.Double(), nullable=True),
        sa.Column("remind_at", sa.Double(), nullable=True),
        sa.Column("auto_key", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_status_notices")),
        sa.UniqueConstraint("auto_key", name=op.f("uq_status_notices_auto_key")),
    )
    op.create_index("ix_status_notices_incident", "status_notices", ["incident_id"])
    op.create_index(
        "ix_status_notices_state_published", "status_notices", ["state", "published_at"]
    )
    op.create_index("ix_status_notices_remind", "status_notices", ["remind_at"])
    op.create_table(
        "status_subscribers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=300), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("confirm_sent_at", sa.Double(), nullable=True),
        sa.Column("confirmed_at", sa.Double(), nullable=True),
        sa.Column("unsubscribed_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_status_subscribers")),
        sa.UniqueConstraint("kind", "address", name=op.f("uq_status_subscribers_kind_address")),
        sa.UniqueConstraint("token", name=op.f("uq_status_subscribers_token")),
    )
    op.create_index("ix_status_subscribers_state", "status_subscribers", ["state"])


def downgrade() -> None:
    op.drop_index("ix_status_subscribers_state", table_name="status_subscribers")
    op.drop_table("status_subscribers")
    op.drop_index("ix_status_notices_remind", table_name="status_notices")
    op.drop_index("ix_status_notices_state_published", table_name="status_notices")
    op.drop_index("ix_status_notices_incident", table_name="status_notices")
    op.drop_table("status_notices")
