"""error issue alerts: the obligation to alert on a new or regressed issue

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 02:00:00

`error_issues.alert_due` is written in the transaction that creates an issue (`new`), reopens
it (`regression`) or resolves/ignores it (`resolved`); the errors alert worker claims it with a
conditional update that clears it, in the transaction that raises or resolves the alert.
Existing issues get none: nothing already stored is news.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("error_issues", schema=None) as batch_op:
        batch_op.add_column(sa.Column("alert_due", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("alert_due_at", sa.Double(), nullable=True))
        batch_op.create_index(batch_op.f("ix_error_issues_alert_due"), ["alert_due"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("error_issues", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_error_issues_alert_due"))
        batch_op.drop_column("alert_due_at")
        batch_op.drop_column("alert_due")
