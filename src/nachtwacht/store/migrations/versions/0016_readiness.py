"""readiness: contact verifications, readiness obligations, restore tests

Revision ID: 0016
Revises: 0013
Create Date: 2026-12-08 05:00:00

New tables only; nothing existing is rewritten.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "contact_verifications",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("contact", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("confirmed_at", sa.Double(), nullable=True),
        sa.Column("outbox_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_verifications")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_contact_verifications_token_hash")),
    )
    op.create_index(
        "ix_contact_verifications_contact_channel",
        "contact_verifications",
        ["contact", "channel"],
    )
    op.create_table(
        "readiness_obligations",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("done_at", sa.Double(), nullable=True),
        sa.Column("data_json", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_readiness_obligations")),
        sa.UniqueConstraint("key", name=op.f("uq_readiness_obligations_key")),
    )
    op.create_table(
        "restore_tests",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.Double(), nullable=False),
        sa.Column("backup", sa.String(length=300), nullable=True),
        sa.Column("backup_created_at", sa.Double(), nullable=True),
        sa.Column("scratch", sa.String(length=300), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("problems_json", sa.Text(), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_restore_tests")),
    )
    op.create_index("ix_restore_tests_finished_at", "restore_tests", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_restore_tests_finished_at", table_name="restore_tests")
    op.drop_table("restore_tests")
    op.drop_table("readiness_obligations")
    op.drop_index("ix_contact_verifications_contact_channel", table_name="contact_verifications")
    op.drop_table("contact_verifications")
