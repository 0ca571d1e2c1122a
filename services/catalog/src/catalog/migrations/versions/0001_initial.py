"""The catalog's tables, and the seeded roles USER and ADMIN.

Revision ID: 0001
Revises:
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import context, op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _schema() -> str | None:
    return context.config.attributes.get("schema")


def upgrade() -> None:
    s = _schema()
    p = f"{s}." if s else ""
    tz = sa.DateTime(timezone=True)
    roles = op.create_table(
        "roles",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("remote_agents_use", sa.Boolean, nullable=False),
        sa.Column("created_at", tz, nullable=False),
        schema=s,
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320), nullable=True, unique=True),
        sa.Column("role", sa.String(64), sa.ForeignKey(f"{p}roles.name"), nullable=False),
        sa.Column("created_at", tz, nullable=False),
        schema=s,
    )
    op.create_index("ix_users_created", "users", ["created_at", "id"], schema=s)
    op.create_table(
        "groups",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", tz, nullable=False),
        schema=s,
    )
    op.create_index("ix_groups_created", "groups", ["created_at", "id"], schema=s)
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.String(64), sa.ForeignKey(f"{p}groups.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("user_id", sa.String(64), sa.ForeignKey(f"{p}users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("created_at", tz, nullable=False),
        schema=s,
    )
    op.create_index("ix_group_members_user", "group_members", ["user_id"], schema=s)
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(64), sa.ForeignKey(f"{p}users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(8), nullable=False),
        sa.Column("created_at", tz, nullable=False),
        sa.Column("expires_at", tz, nullable=True),
        sa.Column("last_used_at", tz, nullable=True),
        sa.Column("revoked_at", tz, nullable=True),
        sa.Column("rate_limit_per_minute", sa.Integer, nullable=True),
        schema=s,
    )
    op.create_index("ix_api_keys_user", "api_keys", ["user_id", "created_at", "id"], schema=s)
    op.create_table(
        "agents",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.String(2000), nullable=True),
        sa.Column("provider", sa.String(100), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("instructions", sa.Text, nullable=True),
        sa.Column("model_parameters", sa.JSON, nullable=False),
        sa.Column("tools", sa.JSON, nullable=False),
        sa.Column("owner_id", sa.String(64), sa.ForeignKey(f"{p}users.id"), nullable=False),
        sa.Column("created_at", tz, nullable=False),
        sa.Column("updated_at", tz, nullable=False),
        schema=s,
    )
    op.create_index("ix_agents_created", "agents", ["created_at", "id"], schema=s)
    op.create_index("ix_agents_owner", "agents", ["owner_id"], schema=s)
    op.create_table(
        "grants",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("agent_id", sa.String(64), sa.ForeignKey(f"{p}agents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("resource_type", sa.String(32), nullable=False),
        sa.Column("principal_type", sa.String(16), nullable=False),
        sa.Column("principal_id", sa.String(64), nullable=True),
        sa.Column("principal_key", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("permissions", sa.Integer, nullable=False),
        sa.Column("created_at", tz, nullable=False),
        sa.UniqueConstraint("agent_id", "resource_type", "principal_type", "principal_key", name="uq_grants_principal"),
        schema=s,
    )
    op.create_index("ix_grants_principal", "grants", ["resource_type", "principal_type", "principal_key"], schema=s)
    op.create_index("ix_grants_agent", "grants", ["agent_id", "created_at", "id"], schema=s)

    now = datetime.now(UTC)
    op.bulk_insert(
        roles,
        [
            {"name": "USER", "remote_agents_use": True, "created_at": now},
            {"name": "ADMIN", "remote_agents_use": True, "created_at": now},
        ],
    )


def downgrade() -> None:
    s = _schema()
    for name in ("grants", "agents", "api_keys", "group_members", "groups", "users", "roles"):
        op.drop_table(name, schema=s)
