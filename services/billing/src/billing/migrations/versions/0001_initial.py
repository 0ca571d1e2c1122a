"""The billing tables: accounts, ledger, reservations, prices.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    s = context.config.attributes.get("schema")
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "accounts",
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("balance", sa.BigInteger, nullable=False),
        sa.Column("reserved", sa.BigInteger, nullable=False),
        sa.Column("last_refill_at", tz, nullable=True),
        sa.Column("created_at", tz, nullable=False),
        schema=s,
    )
    op.create_table(
        "ledger",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("balance_after", sa.BigInteger, nullable=True),
        sa.Column("run_id", sa.String(128), nullable=True),
        sa.Column("call_index", sa.Integer, nullable=True),
        sa.Column("agent_id", sa.String(64), nullable=True),
        sa.Column("conversation_id", sa.String(200), nullable=True),
        sa.Column("provider", sa.String(32), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("price_key", sa.String(200), nullable=True),
        sa.Column("input_tokens", sa.Integer, nullable=True),
        sa.Column("cache_write_tokens", sa.Integer, nullable=True),
        sa.Column("cache_read_tokens", sa.Integer, nullable=True),
        sa.Column("output_tokens", sa.Integer, nullable=True),
        sa.Column("reasoning_tokens", sa.Integer, nullable=True),
        sa.Column("input_price", sa.BigInteger, nullable=True),
        sa.Column("output_price", sa.BigInteger, nullable=True),
        sa.Column("cache_write_price", sa.BigInteger, nullable=True),
        sa.Column("cache_read_price", sa.BigInteger, nullable=True),
        sa.Column("context", sa.String(16), nullable=True),
        sa.Column("estimated", sa.Boolean, nullable=False),
        sa.Column("note", sa.String(500), nullable=True),
        sa.Column("created_at", tz, nullable=False),
        sa.UniqueConstraint("run_id", "call_index", name="uq_ledger_call"),
        schema=s,
    )
    op.create_index("ix_ledger_user", "ledger", ["user_id", "seq"], schema=s)
    op.create_table(
        "reservations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(128), nullable=False, unique=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("remaining", sa.BigInteger, nullable=False),
        sa.Column("expected_calls", sa.Integer, nullable=True),
        sa.Column("expires_at", tz, nullable=False),
        sa.Column("created_at", tz, nullable=False),
        schema=s,
    )
    op.create_index("ix_reservations_expiry", "reservations", ["expires_at"], schema=s)
    op.create_table(
        "prices",
        sa.Column("model_key", sa.String(200), primary_key=True),
        sa.Column("input", sa.BigInteger, nullable=False),
        sa.Column("output", sa.BigInteger, nullable=False),
        sa.Column("cache_write", sa.BigInteger, nullable=True),
        sa.Column("cache_read", sa.BigInteger, nullable=True),
        sa.Column("updated_at", tz, nullable=False),
        schema=s,
    )


def downgrade() -> None:
    s = context.config.attributes.get("schema")
    for table in ("prices", "reservations", "ledger", "accounts"):
        op.drop_table(table, schema=s)
