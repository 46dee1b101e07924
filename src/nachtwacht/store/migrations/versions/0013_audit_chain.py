"""tamper-evident audit log: a hash chain over audit_log, and its head

Revision ID: 0013
Revises: 0010
Create Date: 2026-12-08 05:00:00

`audit_log` gets `seq`, `prev_hash` and `hash`; `audit_head` holds the newest entry's seq and
hash. Entries written before this revision are chained here, in id order (the order they were
inserted in on SQLite and, but for concurrent writers, on the servers), starting at the
genesis hash: the chain then proves that nothing changed after the upgrade, not before it
(decision 28). A store without entries gets no head row; the first entry makes it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from nachtwacht.store.auditchain import FIELDS, GENESIS, HEAD_ID, entry_hash

revision: str = "0013"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 2000


def upgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("base_seq", sa.BigInteger(), nullable=False),
        sa.Column("base_hash", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    _chain_existing()
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch_op.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_audit_log_seq"), ["seq"])


def _chain_existing() -> None:
    conn = op.get_bind()
    log = sa.table(
        "audit_log",
        sa.column("id", sa.BigInteger),
        *(sa.column(name) for name in FIELDS),
        sa.column("seq", sa.BigInteger),
        sa.column("prev_hash"),
        sa.column("hash"),
    )
    head = sa.table(
        "audit_head",
        *(sa.column(n) for n in ("id", "seq", "hash", "base_seq", "base_hash", "updated_at")),
    )
    change = (
        log.update()
        .where(log.c.id == sa.bindparam("b_id"))
        .values(
            seq=sa.bindparam("b_seq"), prev_hash=sa.bindparam("b_prev"), hash=sa.bindparam("b_hash")
        )
    )
    seq, prev, last_id, last_ts = 0, GENESIS, None, 0.0
    while True:
        query = sa.select(log.c.id, *(log.c[n] for n in FIELDS)).order_by(log.c.id).limit(BATCH)
        if last_id is not None:
            query = query.where(log.c.id > last_id)
        rows = conn.execute(query).mappings().all()
        if not rows:
            break
        updates = []
        for row in rows:
            seq += 1
            digest = entry_hash(seq, dict(row), prev)
            updates.append({"b_id": row["id"], "b_seq": seq, "b_prev": prev, "b_hash": digest})
            prev, last_id, last_ts = digest, row["id"], float(row["ts"])
        conn.execute(change, updates)
    if seq:
        conn.execute(
            head.insert().values(
                id=HEAD_ID, seq=seq, hash=prev, base_seq=0, base_hash=GENESIS, updated_at=last_ts
            )
        )


def downgrade() -> None:
    op.drop_table("audit_head")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_audit_log_seq"), type_="unique")
        batch_op.drop_column("hash")
        batch_op.drop_column("prev_hash")
        batch_op.drop_column("seq")
