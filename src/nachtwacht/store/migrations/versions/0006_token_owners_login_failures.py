"""token owners and per-address lockout

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-09 10:00:00

API tokens get the user they act for (`user_id`), backfilled from `created_by` where that names
a user: tokens made through the API before this revision then follow their creator too. Tokens
made by the CLI or by another token stay without an owner.

Locks move from `users.locked_until` (one lock per account, which anyone could set off) to
`login_failures`, one row per username as typed and client address. Running locks are not
carried over: they last 15 minutes, and an admin could lift them anyway.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_id", sa.Integer(), nullable=True))
    tokens = sa.table(
        "api_tokens", sa.column("id", sa.Integer), sa.column("created_by"), sa.column("user_id")
    )
    users = sa.table("users", sa.column("id", sa.Integer), sa.column("username"))
    owner = sa.select(users.c.id).where(users.c.username == tokens.c.created_by).scalar_subquery()
    op.execute(tokens.update().values(user_id=owner))

    op.create_table(
        "login_failures",
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.Double(), nullable=False),
        sa.Column("locked_until", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("username", "ip", name=op.f("pk_login_failures")),
    )
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_login_failures_first_at"), ["first_at"], unique=False)
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("locked_until")


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("locked_until", sa.Double(), nullable=True))
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_failures_first_at"))
    op.drop_table("login_failures")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("user_id")
