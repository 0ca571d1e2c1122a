"""Token counts as BIGINT; the usage_dead_letters table.

A provider reporting more than 2^31 - 1 tokens made the ledger insert fail (INTEGER), and with it
the whole usage batch. The five token columns become BIGINT (this rewrites the ledger table under an
exclusive lock: on a large ledger, plan the upgrade's minutes).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TOKENS = ("input_tokens", "cache_write_tokens", "cache_read_tokens", "output_tokens", "reasoning_tokens")


def upgrade() -> None:
    s = context.config.attributes.get("schema")
    for name in _TOKENS:
        op.alter_column("ledger", name, type_=sa.BigInteger, existing_type=sa.Integer, schema=s)
    op.create_table(
        "usage_dead_letters",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("stream", sa.String(64), nullable=False),
        sa.Column("stream_seq", sa.BigInteger, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("msg_id", sa.String(255), nullable=True),
        sa.Column("deliveries", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("error", sa.String(2000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("stream", "stream_seq", "digest", name="uq_usage_dead_letter"),
        schema=s,
    )


def downgrade() -> None:
    s = context.config.attributes.get("schema")
    op.drop_table("usage_dead_letters", schema=s)
    # fails if a token count above 2^31 - 1 was written since: that is the point
    for name in _TOKENS:
        op.alter_column("ledger", name, type_=sa.Integer, existing_type=sa.BigInteger, schema=s)
