"""Tables, the engine and migrations.

Every table lives in PostgreSQL schema ``catalog``, so the catalog can share a database with another
service.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from servicekit import db as sdb

log = logging.getLogger(__name__)

SCHEMA = "catalog"
#: Serialises migrations of concurrent replicas (an arbitrary constant, the catalog's own).
MIGRATION_LOCK_ID = 0x5B_CA7A_106

metadata = MetaData(schema=SCHEMA)

roles = Table(
    "roles",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("remote_agents_use", Boolean, nullable=False, default=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("email", String(320), nullable=True, unique=True),
    Column("role", String(64), ForeignKey("catalog.roles.name"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_users_created", "created_at", "id"),
)

groups = Table(
    "groups",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_groups_created", "created_at", "id"),
)

group_members = Table(
    "group_members",
    metadata,
    Column("group_id", String(64), ForeignKey("catalog.groups.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", String(64), ForeignKey("catalog.users.id", ondelete="CASCADE"), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_group_members_user", "user_id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(64), ForeignKey("catalog.users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(8), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("rate_limit_per_minute", Integer, nullable=True),
    Index("ix_api_keys_user", "user_id", "created_at", "id"),
)

agents = Table(
    "agents",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("description", String(2000), nullable=True),
    Column("provider", String(100), nullable=False),
    Column("model", String(200), nullable=False),
    Column("instructions", Text, nullable=True),
    Column("model_parameters", JSON, nullable=False),
    Column("tools", JSON, nullable=False),
    Column("owner_id", String(64), ForeignKey("catalog.users.id"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_agents_created", "created_at", "id"),
    Index("ix_agents_owner", "owner_id"),
)

grants = Table(
    "grants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("agent_id", String(64), ForeignKey("catalog.agents.id", ondelete="CASCADE"), nullable=False),
    Column("resource_type", String(32), nullable=False),
    Column("principal_type", String(16), nullable=False),
    Column("principal_id", String(64), nullable=True),
    # principal_id, or "*" for public: NULLs never collide in a unique index, this does.
    Column("principal_key", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("permissions", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("agent_id", "resource_type", "principal_type", "principal_key", name="uq_grants_principal"),
    Index("ix_grants_principal", "resource_type", "principal_type", "principal_key"),
    Index("ix_grants_agent", "agent_id", "created_at", "id"),
)


def open_engine(url: str) -> AsyncEngine:
    """An engine for the catalog's database (its tables name schema ``catalog``)."""
    return sdb.create_engine(url)


async def migrate(url: str) -> None:
    """Bring the schema to head. Concurrent replicas wait on a PostgreSQL advisory lock."""
    await sdb.migrate(
        url, schema=SCHEMA, script_location=Path(__file__).parent / "migrations", lock_id=MIGRATION_LOCK_ID
    )
    log.info("catalog schema is up to date")


async def wait_for_schema(url: str, report: Callable[[str | None], None]) -> None:
    """Wait until another process (``python -m catalog migrate``, the chart's Job) has migrated the schema
    to the head this code needs; ``report`` gets what is missing meanwhile
    (see :func:`servicekit.db.wait_for_schema`)."""
    await sdb.wait_for_schema(url, schema=SCHEMA, script_location=Path(__file__).parent / "migrations", report=report)
